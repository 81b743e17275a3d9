"""Schedules driven tick by tick, as the scheduler daemon drives them.

The tick times come from Dagster's own cron iterator (the one the daemon uses) over each
schedule's cron string and timezone, so a schedule that ticks at the wrong hour fails here. Each
tick is evaluated with a context for that time, and the observation schedule's run is launched
for real on the definitions' job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice

import dagster as dg
from dagster._utils.schedules import cron_string_iterator
from materialize import run_assets
from real_lake import LakeEnv

from orchestration import LIFECYCLE, OBSERVE_JOB, RETRAIN_JOB, TRIGGER_TAG, build_definitions


def ticks(schedule: dg.ScheduleDefinition, after: datetime, count: int) -> list[datetime]:
    """The schedule's next ``count`` tick times after ``after``, in UTC."""
    times = cron_string_iterator(
        after.timestamp(), str(schedule.cron_schedule), schedule.execution_timezone
    )
    return [t.astimezone(UTC) for t in islice(times, count)]


def _schedule(env: LakeEnv, name: str) -> dg.ScheduleDefinition:
    return build_definitions(env.settings).resolve_schedule_def(name)


def test_nightly_retrain_ticks_at_three_utc_and_requests_the_lifecycle(empty_env: LakeEnv) -> None:
    schedule = _schedule(empty_env, "nightly_retrain")
    assert ticks(schedule, datetime(2026, 3, 4, 1, 17, tzinfo=UTC), 3) == [
        datetime(2026, 3, 4, 3, 0, tzinfo=UTC),
        datetime(2026, 3, 5, 3, 0, tzinfo=UTC),
        datetime(2026, 3, 6, 3, 0, tzinfo=UTC),
    ]
    assert ticks(schedule, datetime(2026, 3, 4, 3, 0, 1, tzinfo=UTC), 1) == [
        datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
    ], "just after a tick, the next one is a day later"
    retrain = build_definitions(empty_env.settings).resolve_job_def(RETRAIN_JOB)
    assert schedule.job_name == RETRAIN_JOB
    assert retrain.asset_layer.selected_asset_keys == set(LIFECYCLE)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.DagsterInstance.ephemeral() as instance:
        for tick in ticks(schedule, datetime(2026, 3, 4, tzinfo=UTC), 2):
            context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
            (request,) = schedule.evaluate_tick(context).run_requests or []
            assert request.tags[TRIGGER_TAG] == "schedule"


def test_observation_ticks_every_quarter_hour_and_its_run_observes(empty_env: LakeEnv) -> None:
    schedule = _schedule(empty_env, "observe_sidecar_tables_every_15_minutes")
    assert ticks(schedule, datetime(2026, 3, 4, 3, 7, tzinfo=UTC), 4) == [
        datetime(2026, 3, 4, 3, 15, tzinfo=UTC),
        datetime(2026, 3, 4, 3, 30, tzinfo=UTC),
        datetime(2026, 3, 4, 3, 45, tzinfo=UTC),
        datetime(2026, 3, 4, 4, 0, tzinfo=UTC),
    ]
    assert schedule.job_name == OBSERVE_JOB
    (tick,) = ticks(schedule, datetime(2026, 3, 4, 3, 7, tzinfo=UTC), 1)
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        (request,) = schedule.evaluate_tick(context).run_requests or []
        run = run_assets(empty_env.settings, instance, [], job_name=OBSERVE_JOB, tags=request.tags)
        assert run.success
        observed = {
            e.asset_key.to_user_string()
            for e in run.all_events
            if e.event_type_value == "ASSET_OBSERVATION" and e.asset_key is not None
        }
        assert observed == {
            "bronze/audio_chunks",
            "bronze/dead_letters",
            "silver/audio_events",
            "silver/sessions",
            "gold/predictions",
        }
