"""Names in the asset graph, decided in one place: asset keys, writer pools, jobs and sensors.

A lake table's key is ``[layer, table]``, the same name analysts use in SQL, so the sidecar's
observed tables, the assets that write gold and monitoring tables, and the dbt sources all
agree on ``bronze/audio_chunks``, ``silver/audio_events`` and so on. Every Dagster writer of a
table runs in that table's concurrency pool (limit one, see :mod:`orchestration.instance`),
which is how the lake's one-writer-per-table rule holds inside Dagster.
"""

from __future__ import annotations

import dagster as dg

from lake_schemas.tables import TableSpec


def table_key(spec: TableSpec) -> dg.AssetKey:
    """``AssetKey([layer, table])`` of a lake table."""
    return dg.AssetKey([spec.layer, spec.table])


def writer_pool(spec: TableSpec) -> str:
    """The concurrency pool shared by every Dagster writer of one table."""
    return f"lake_writer_{spec.layer}_{spec.table}"


TRAINING_SET = dg.AssetKey(["training", "training_set"])
CANDIDATE_MODEL = dg.AssetKey(["training", "candidate_model"])
MODEL_EVALUATION = dg.AssetKey(["training", "model_evaluation"])
CHAMPION_MODEL = dg.AssetKey(["training", "champion_model"])
LIFECYCLE = (TRAINING_SET, CANDIDATE_MODEL, MODEL_EVALUATION, CHAMPION_MODEL)
"""Retraining materializes these, in this order."""
LIVE_MODEL_COMPARISON = dg.AssetKey(["monitoring", "live_model_comparison"])

RETRAIN_JOB = "retrain"
ERASE_JOB = "erase_devices"
OBSERVE_JOB = "observe_sidecar_tables"
DRIFT_SENSOR = "drift_retraining_sensor"
TRIGGER_TAG = "sonolake/trigger"
"""Run tag: what started a run (``schedule``, ``drift``, ``demo``)."""
