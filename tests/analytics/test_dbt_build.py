"""``dbt build`` inside a Dagster materialization, over a lake the real sidecar landed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
from materialize import check_results, run_assets
from real_lake import LakeEnv

from lake_schemas import ALL_TABLES, AUDIO_EVENTS, SESSIONS
from orchestration import analytics_database, build_definitions, generate_dbt_docs
from sonolake import wiring

MARTS = (
    "dim_devices",
    "device_daily_activity",
    "label_distribution_daily",
    "model_accuracy_daily",
    "stream_health_daily",
    "model_versions",
    "live_predictions_daily",
)


def test_dbt_build_passes_inside_a_materialization(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    lake = wiring.lake(settings)
    defs_keys = [f"analytics/{name}" for name in MARTS] + [
        "analytics/stg_audio_chunks",
        "analytics/stg_audio_events",
        "analytics/stg_sessions",
        "analytics/stg_dead_letters",
        "analytics/stg_model_evaluations",
        "analytics/stg_drift_reports",
        "analytics/stg_predictions",
    ]
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(settings, instance, defs_keys)
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert set(defs_keys) <= materialized

    # every dbt test ran as an asset check, and passed
    checks = check_results(result)
    assert len(checks) >= 30
    failed = {name: e.description for name, e in checks.items() if not e.passed}
    assert not failed, failed

    database = analytics_database(build_definitions(settings).resources["paths"])
    with duckdb.connect(str(database), read_only=True) as con:
        devices = con.execute("select count(*) from marts.dim_devices").fetchone()[0]
        activity = con.execute(
            "select sum(events), sum(chunks) from marts.device_daily_activity"
        ).fetchone()
        labels = con.execute("select sum(events) from marts.label_distribution_daily").fetchone()[0]
        health = con.execute(
            "select sum(chunks_landed), sum(sessions_closed) from marts.stream_health_daily"
        ).fetchone()
        finals = con.execute(
            "select sum(final_results) from marts.live_predictions_daily where run_id = 'live'"
        ).fetchone()[0]
    events = lake.read(AUDIO_EVENTS)
    sessions = lake.read(SESSIONS)
    assert devices == len(set(sessions.column("device_id").to_pylist()))
    assert activity[0] == events.num_rows
    assert activity[1] == sum(sessions.column("chunks").to_pylist())
    labelled = sum(1 for label in events.column("label").to_pylist() if label is not None)
    assert labels == labelled > 0
    assert health[1] == sessions.num_rows
    assert health[0] >= activity[1]
    # every silver event is an utterance whose final result the gateway sent
    assert finals == events.num_rows


def test_a_lake_nothing_has_written_builds_and_documents(
    empty_env: LakeEnv, dbt_manifest: Path
) -> None:
    """No dead letter, no drift report, no event at all: dbt still builds and documents, and
    the build creates no lake table (the sources read as empty in dbt itself)."""
    settings = empty_env.settings
    defs = build_definitions(settings)
    analytics = [
        k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "analytics"
    ]
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(settings, instance, analytics)
    assert result.success
    assert all(e.passed for e in check_results(result).values())
    lake = wiring.lake(settings)
    assert not [spec.name for spec in ALL_TABLES if lake.exists(spec)]
    assert generate_dbt_docs(defs)
    assert (Path(dbt_manifest.parent) / "catalog.json").exists()
