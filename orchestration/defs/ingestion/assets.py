"""The sidecar's tables as observed assets: Dagster watches them, the sidecar writes them.

bronze, silver and gold.predictions' live rows have exactly one writer, the sidecar process
(``sonolake sidecar``), so Dagster never materializes them; it *observes* them. An observation
reads the Delta log and reports the table's version as the asset's data version, so downstream
assets see new data as soon as the sidecar commits, with row counts and versions plotted over
time in the UI. Freshness policies say how stale each table may get while devices are
streaming.
"""

from datetime import timedelta

import dagster as dg

from lake_schemas.tables import (
    AUDIO_CHUNKS,
    AUDIO_EVENTS,
    DEAD_LETTERS,
    PREDICTIONS,
    SESSIONS,
    TableSpec,
)
from orchestration.keys import table_key
from orchestration.lake_metadata import snapshot_metadata, table_definition_metadata
from orchestration.resources import LakeResource

SIDECAR_TABLES: tuple[TableSpec, ...] = (
    AUDIO_CHUNKS,
    DEAD_LETTERS,
    AUDIO_EVENTS,
    SESSIONS,
    PREDICTIONS,
)

STREAMING_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=6), warn_window=timedelta(hours=1)
)
"""bronze/silver should change at least every few hours while devices stream."""


def _sidecar_spec(spec: TableSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=table_key(spec),
        description=spec.description,
        group_name="ingestion",
        kinds={"delta", "beam"},
        metadata=table_definition_metadata(spec),
        tags={"layer": spec.layer, "writer": "sidecar"},
        freshness_policy=None if spec is DEAD_LETTERS else STREAMING_FRESHNESS,
    )


@dg.multi_observable_source_asset(
    specs=[_sidecar_spec(spec) for spec in SIDECAR_TABLES],
    name="sidecar_tables",
    description="Observe the sidecar's Delta tables: version, rows, files, last commit.",
    group_name="ingestion",
    can_subset=True,
)
def sidecar_tables(context: dg.AssetExecutionContext, lake: LakeResource):
    """One observation per selected table; the Delta version is the data version."""
    for spec in SIDECAR_TABLES:
        key = table_key(spec)
        if key not in context.selected_asset_keys:
            continue
        snapshot = lake.open().table_snapshot(spec)
        version = "absent" if snapshot is None else str(snapshot.version)
        yield dg.ObserveResult(
            asset_key=key,
            data_version=dg.DataVersion(version),
            metadata=snapshot_metadata(snapshot),
        )
