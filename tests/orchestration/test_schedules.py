"""Schedules evaluated as the daemon would, at their ticks."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from orchestration.defs.ingestion.schedules import observe_sidecar_tables_schedule
from orchestration.defs.training.schedules import nightly_retrain_schedule


def test_nightly_retrain_requests_the_retrain_job_at_three() -> None:
    tick = datetime(2026, 3, 4, 3, 0, tzinfo=UTC)
    context = dg.build_schedule_context(scheduled_execution_time=tick)
    result = nightly_retrain_schedule.evaluate_tick(context)
    assert result.run_requests and len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags["sonolake/trigger"] == "schedule"
    assert nightly_retrain_schedule.job_name == "retrain"
    ticks = nightly_retrain_schedule.execution_timezone, nightly_retrain_schedule.cron_schedule
    assert ticks == ("UTC", "0 3 * * *")
    assert nightly_retrain_schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_observation_schedule_runs_every_quarter_hour() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 4, 3, 15, tzinfo=UTC)
    )
    result = observe_sidecar_tables_schedule.evaluate_tick(context)
    assert (
        result.run_requests and observe_sidecar_tables_schedule.job_name == "observe_sidecar_tables"
    )
    assert observe_sidecar_tables_schedule.cron_schedule == "*/15 * * * *"
