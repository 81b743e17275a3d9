"""Schedules of the ingestion domain."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.ingestion.jobs import observe_sidecar_tables_job

OBSERVE_CRON = "*/15 * * * *"
"""Every 15 minutes: often enough for the freshness policies, cheap (reads Delta logs)."""

observe_sidecar_tables_schedule = dg.ScheduleDefinition(
    name="observe_sidecar_tables_every_15_minutes",
    job=observe_sidecar_tables_job,
    cron_schedule=OBSERVE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Observe the sidecar's tables and run their quality checks.",
)
