"""Erasure requests and raw-audio retention, as Dagster assets.

``monitoring/erasures`` is the audit table; materializing it with a list of device ids (the
``erase_devices`` job) erases each device from the lake and the spool, exactly as
``sonolake erase --device ID --yes`` does, one audit row per device. ``maintenance/
bronze_pcm_retention`` removes bronze partitions older than ``SONOLAKE_BRONZE_PCM_RETENTION_DAYS``
days, oldest first, one commit per day; it runs in bronze's writer pool, so never beside
bronze's compaction and vacuum.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from pydantic import Field

from lake_schemas.retention import expire_partitions
from lake_schemas.tables import AUDIO_CHUNKS, ERASURES
from orchestration.keys import ERASE_JOB, table_key, writer_pool
from orchestration.lake_metadata import snapshot_metadata, table_definition_metadata
from orchestration.resources import LakeResource, PlatformPaths, RetentionPolicy
from streaming.spool.erasure import erase_everywhere

RETENTION_KEY = dg.AssetKey(["maintenance", "bronze_pcm_retention"])


class ErasureRequests(dg.Config):
    device_ids: list[str] = Field(default_factory=list)
    """Devices to erase, each from every table that holds device data and from the spool.
    Empty by default, so that materializing other assets never needs this config (a run
    with no devices erases nothing)."""


@dg.asset(
    key=table_key(ERASURES),
    group_name="privacy",
    kinds={"delta"},
    description=ERASURES.description,
    metadata=table_definition_metadata(ERASURES),
    pool=writer_pool(ERASURES),
)
def erasures(
    context: dg.AssetExecutionContext,
    config: ErasureRequests,
    lake: LakeResource,
    paths: PlatformPaths,
) -> dg.MaterializeResult:
    """Erase each requested device; the audit table gets one row per device."""
    opened = lake.open()
    rows, leftovers = 0, []
    for device in config.device_ids:
        result, purge = erase_everywhere(
            opened, Path(paths.spool_dir), device, requested_by=f"dagster:{context.run_id}"
        )
        rows += result.total_rows
        leftovers += result.leftover_files
        context.log.info(
            f"erasure {result.erasure_id}: {result.total_rows} rows, {purge.records} spool records"
        )
    if leftovers:
        raise dg.Failure(f"data files still hold erased devices: {', '.join(leftovers)}")
    return dg.MaterializeResult(
        metadata={
            **snapshot_metadata(opened.table_snapshot(ERASURES)),
            "devices": len(config.device_ids),
            "rows_removed": rows,
        }
    )


erase_devices_job = dg.define_asset_job(
    name=ERASE_JOB,
    selection=dg.AssetSelection.assets(table_key(ERASURES)),
    description="Erase a batch of devices (config: device_ids) from the lake and the spool.",
    tags={"domain": "privacy"},
)


class RetentionConfig(dg.Config):
    keep_days: int | None = None
    """Days of raw PCM to keep (default: the ``retention`` resource's, from settings)."""
    vacuum_retention_hours: float = 168.0
    """Vacuum after the deletes: removed files older than this go (hours)."""


@dg.asset(
    key=RETENTION_KEY,
    deps=[table_key(AUDIO_CHUNKS)],
    group_name="maintenance",
    kinds={"delta"},
    description="Remove bronze.audio_chunks partitions (raw PCM) older than the retention "
    "period, one ingest day per commit; silver and gold keep their rows.",
    automation_condition=dg.AutomationCondition.on_cron("0 3 * * *").with_label(
        "daily at 03:00 UTC"
    ),
    pool=writer_pool(AUDIO_CHUNKS),
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30),
)
def bronze_pcm_retention(
    context: dg.AssetExecutionContext,
    config: RetentionConfig,
    lake: LakeResource,
    retention: RetentionPolicy,
) -> dg.MaterializeResult:
    keep = config.keep_days or retention.bronze_pcm_retention_days
    opened = lake.open()
    result = expire_partitions(
        opened,
        keep,
        datetime.now(UTC).date(),
        vacuum_retention_hours=config.vacuum_retention_hours,
    )
    context.log.info(f"removed partitions before {result.cutoff}: {result.removed}")
    return dg.MaterializeResult(
        metadata={
            **snapshot_metadata(opened.table_snapshot(AUDIO_CHUNKS)),
            "keep_days": keep,
            "cutoff": result.cutoff.isoformat(),
            "partitions_removed": len(result.removed),
            "rows_removed": sum(result.removed.values()),
            "vacuumed_files": result.vacuumed_files,
            "readable_by_time_travel_until": (
                datetime.now(UTC) + timedelta(hours=config.vacuum_retention_hours)
            ).isoformat(),
        }
    )
