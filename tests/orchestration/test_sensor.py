"""The drift sensor over real monitoring.drift_reports rows, driven with a cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from real_lake import LakeEnv

from lake_schemas import DRIFT_REPORTS, Lake
from models.drift import ColumnDrift, DriftResult, report_row, report_table
from orchestration.defs.monitoring.sensors import (
    BEGINNING,
    REPORT_TAG,
    TRIGGER_TAG,
    drift_retraining_sensor,
)
from orchestration.resources import LakeResource
from sonolake import wiring


def _report(lake: Lake, *, drifted: bool, at: datetime, report_id: str) -> None:
    """Append a drift report as the drift asset writes it."""
    share = 0.9 if drifted else 0.1
    result = DriftResult(
        n_reference=500,
        n_current=200,
        drift_share_threshold=0.5,
        drifted_columns=17 if drifted else 2,
        drifted_share=share,
        columns=(ColumnDrift("rms_dbfs", "Wasserstein distance (normed)", share, 0.2, drifted),),
        html=b"",
    )
    row = report_row(
        result,
        reference_model_version="1",
        window_start=at,
        window_end=at,
        html_uri=None,
        created_at=at,
        report_id=report_id,
    )
    lake.append(DRIFT_REPORTS, report_table([row], DRIFT_REPORTS.schema), writer="test")


def _evaluate(env: LakeEnv, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    settings = env.settings
    resource = LakeResource(root=settings.lake_root)
    with dg.build_sensor_context(cursor=cursor, resources={"lake": resource}) as context:
        return drift_retraining_sensor(context)  # type: ignore[return-value]


def test_drift_turns_into_one_retraining_run_and_moves_the_cursor(empty_env: LakeEnv) -> None:
    settings = empty_env.settings
    lake = wiring.lake(settings)
    first = _evaluate(empty_env, None)  # no table yet: start from the beginning of time
    assert isinstance(first, dg.SensorResult) and not first.run_requests
    assert first.cursor == BEGINNING

    start = datetime(2026, 1, 1, tzinfo=UTC)
    _report(lake, drifted=False, at=start, report_id="calm")
    quiet = _evaluate(empty_env, first.cursor)
    assert isinstance(quiet, dg.SensorResult)
    assert not quiet.run_requests
    assert quiet.cursor == start.isoformat()

    _report(lake, drifted=True, at=start + timedelta(hours=1), report_id="drift-a")
    _report(lake, drifted=True, at=start + timedelta(hours=2), report_id="drift-b")
    fired = _evaluate(empty_env, quiet.cursor)
    assert isinstance(fired, dg.SensorResult)
    assert len(fired.run_requests) == 1, "a burst of drifted reports asks for one retraining"
    request = fired.run_requests[0]
    assert request.run_key == "drift-drift-b"
    assert request.tags[TRIGGER_TAG] == "drift" and request.tags[REPORT_TAG] == "drift-b"
    assert fired.cursor == (start + timedelta(hours=2)).isoformat()

    again = _evaluate(empty_env, fired.cursor)
    assert isinstance(again, dg.SkipReason), "a report never triggers twice"


def test_a_new_sensor_does_not_act_on_history(empty_env: LakeEnv) -> None:
    settings = empty_env.settings
    lake = wiring.lake(settings)
    at = datetime(2026, 2, 1, tzinfo=UTC)
    _report(lake, drifted=True, at=at, report_id="old-drift")
    started = _evaluate(empty_env, None)
    assert isinstance(started, dg.SensorResult) and not started.run_requests
    assert started.cursor == at.isoformat()


def test_sensor_targets_the_retrain_job() -> None:
    assert drift_retraining_sensor.job_name == "retrain"
