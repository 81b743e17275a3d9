"""``dbt build`` inside a Dagster materialization, over a lake the real sidecar landed."""

from __future__ import annotations

import dagster as dg
import duckdb
from lake_fixture import LakeEnv
from materialize import check_results, run_assets

from lake_schemas import AUDIO_EVENTS, SESSIONS, Lake
from orchestration.defs.analytics.assets import ANALYTICS_DATABASE

MARTS = (
    "dim_devices",
    "device_daily_activity",
    "label_distribution_daily",
    "model_accuracy_daily",
    "stream_health_daily",
    "model_versions",
)


def test_dbt_build_passes_inside_a_materialization(analytics_lake: LakeEnv) -> None:
    settings = analytics_lake.settings
    lake = Lake(settings.lake_root, catalog_file=settings.catalog_file)
    defs_keys = [f"analytics/{name}" for name in MARTS] + [
        "analytics/stg_audio_chunks",
        "analytics/stg_audio_events",
        "analytics/stg_sessions",
        "analytics/stg_dead_letters",
        "analytics/stg_model_evaluations",
        "analytics/stg_drift_reports",
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

    database = settings.state_path / ANALYTICS_DATABASE
    with duckdb.connect(str(database), read_only=True) as con:
        devices = con.execute("select count(*) from marts.dim_devices").fetchone()[0]
        activity = con.execute(
            "select sum(events), sum(chunks) from marts.device_daily_activity"
        ).fetchone()
        labels = con.execute("select sum(events) from marts.label_distribution_daily").fetchone()[0]
        health = con.execute(
            "select sum(chunks_landed), sum(sessions_closed) from marts.stream_health_daily"
        ).fetchone()
    events = lake.read(AUDIO_EVENTS)
    sessions = lake.read(SESSIONS)
    assert devices == len(set(sessions.column("device_id").to_pylist()))
    assert activity[0] == events.num_rows
    assert activity[1] == sum(sessions.column("chunks").to_pylist())
    labelled = sum(1 for label in events.column("label").to_pylist() if label is not None)
    assert labels == labelled > 0
    assert health[1] == sessions.num_rows
    assert health[0] >= activity[1]
