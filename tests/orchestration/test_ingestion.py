"""Observing the sidecar's tables and checking them, on a lake the real sidecar landed."""

from __future__ import annotations

import dagster as dg
from materialize import check_results, run_assets
from real_lake import LakeEnv

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, SESSIONS
from orchestration import OBSERVE_JOB
from sonolake import wiring


def _observations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_OBSERVATION":
            observation = event.event_specific_data.asset_observation  # type: ignore[union-attr]
            found[observation.asset_key.to_user_string()] = {
                "data_version": observation.tags.get("dagster/data_version"),
                **{k: v.value for k, v in observation.metadata.items()},
            }
    return found


def test_observe_and_check_the_landed_tables(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    lake = wiring.lake(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(settings, instance, [], job_name=OBSERVE_JOB)
    assert result.success

    observed = _observations(result)
    assert set(observed) == {
        "bronze/audio_chunks",
        "bronze/dead_letters",
        "silver/audio_events",
        "silver/sessions",
        "gold/predictions",
    }
    chunks = observed["bronze/audio_chunks"]
    assert chunks["dagster/row_count"] == lake.read(AUDIO_CHUNKS, columns=["seq"]).num_rows > 0
    assert chunks["data_version"] == str(lake.version(AUDIO_CHUNKS))
    assert observed["silver/audio_events"]["dagster/row_count"] == lake.read(AUDIO_EVENTS).num_rows
    # one final result per event: what the gateway decided, landed beside it
    assert observed["gold/predictions"]["dagster/row_count"] == lake.read(AUDIO_EVENTS).num_rows

    checks = check_results(result)
    assert len(checks) == 18  # gold.predictions adds its three generic checks
    failed = {name: e.description for name, e in checks.items() if not e.passed}
    assert not failed, failed

    # every result is also in the lake's catalog, next to the table's versions
    recorded = {(q.table_name, q.check_name) for q in lake.catalog.quality("bronze.audio_chunks")}
    assert ("bronze.audio_chunks", "primary_key_unique") in recorded
    assert ("bronze.audio_chunks", "sidecar_lag") in recorded


def test_duplicate_keys_fail_the_check(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    lake = wiring.lake(settings)
    # a second writer appending a session row the sidecar already landed: a real duplicate
    sessions = lake.read(SESSIONS)
    lake.append(SESSIONS, sessions.slice(0, 1), writer="test-intruder")
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(settings, instance, [], job_name=OBSERVE_JOB)
    checks = check_results(result)
    duplicate = checks["silver/sessions:primary_key_unique"]
    assert not duplicate.passed
    assert duplicate.metadata["duplicate_keys"].value == 1
    latest = [
        q for q in lake.catalog.quality("silver.sessions") if q.check_name == "primary_key_unique"
    ]
    assert latest and not latest[-1].passed


def test_checks_on_an_empty_lake_pass_with_nothing_to_check(empty_env: LakeEnv) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(empty_env.settings, instance, [], job_name=OBSERVE_JOB)
    assert result.success
    checks = check_results(result)
    assert len(checks) == 18 and all(e.passed for e in checks.values())
    absent = checks["silver/audio_events:schema_matches_spec"]
    assert absent.metadata["exists"].value is False
