"""Nightly retraining: new labelled data reaches the model even when nothing drifts."""

import dagster as dg

from orchestration.defs.training.jobs import retrain_job
from orchestration.keys import TRIGGER_TAG

NIGHTLY_CRON = "0 3 * * *"
"""03:00 UTC, after the day's data has landed and before the morning's traffic."""

nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain",
    job=retrain_job,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    tags={TRIGGER_TAG: "schedule"},
    description="Retrain from the lake every night; the promotion gate decides what is served.",
)
