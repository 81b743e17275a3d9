"""Lake maintenance: compaction and vacuum with a retention period, one asset per table.

Streaming writes many small files (the sidecar commits every few seconds); compaction merges
them so scans stay fast, and vacuum deletes the files no version within the retention period
needs (after that, time travel further back stops working). Each table's maintenance runs in
the concurrency pool of that table's writer (``lake_writer_<layer>_<table>``, limit one), so it
never overlaps the Dagster asset that writes the table, nor another maintenance run of it.
The sidecar, which writes bronze and silver from outside Dagster, only appends and merges;
Delta lets an append commit beside a compaction, and a conflicting merge is retried.

This is the second tier: every writer already compacts the partitions it wrote into ~16 MB
files right after its own commits (``lake_schemas.CompactionPolicy``), so files stay bounded
between nightly runs; here they are merged towards ``target_file_mb`` and vacuumed. A table
with ``cluster_by`` columns (``silver.audio_events``: ``device_id``) also has yesterday's
partition z-ordered by them once it has closed, so per-device queries skip the row groups of
other devices (measured in docs/performance.md#growth).
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from lake_schemas import CommitResult
from lake_schemas.errors import TableNotFound
from lake_schemas.tables import ALL_TABLES, TableSpec
from orchestration.keys import table_key, writer_pool
from orchestration.lake_metadata import snapshot_metadata
from orchestration.resources import LakeResource

WRITER = "dagster:maintenance"
DEFAULT_RETENTION_HOURS = 168.0
"""Seven days of time travel, Delta's own default retention."""

NIGHTLY_AFTER_CHANGES = dg.AutomationCondition.on_cron("30 2 * * *").with_label(
    "nightly at 02:30 UTC, if the table changed since the last run"
)


class MaintenanceConfig(dg.Config):
    retention_hours: float = DEFAULT_RETENTION_HOURS
    """Vacuum keeps every file a version younger than this needs (hours)."""
    target_file_mb: int = 128
    """Compaction's target file size (MB)."""
    cluster_partition: str | None = None
    """Which date partition to z-order (``YYYY-MM-DD``) for a table with ``cluster_by``
    columns; default: yesterday (UTC), the partition that closed last."""


def cluster_partition(spec: TableSpec, day: str | None) -> dict[str, str] | None:
    """The partition to z-order: ``day`` (default yesterday, UTC) of the table's date
    partition column; None for a table with no ``cluster_by`` or no single partition column."""
    if not spec.cluster_by or len(spec.partition_by) != 1:
        return None
    day = day or (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    return {spec.partition_by[0]: date.fromisoformat(day).isoformat()}


def _clustering_note(partition: dict[str, str] | None, result: CommitResult | None) -> str:
    """What the z-order did, for the run's metadata (``result`` is None when nothing ran)."""
    if result is None:
        return "none"
    return f"{partition}: {'nothing to do' if result.skipped else result.operation}"


def _description(spec: TableSpec) -> str:
    steps = [f"Compact {spec.name}'s small files"]
    if spec.cluster_by:
        steps.append(f"z-order yesterday's partition by {', '.join(spec.cluster_by)}")
    steps.append("then vacuum files older than the retention period.")
    return ", ".join(steps)


def maintenance_key(spec: TableSpec) -> dg.AssetKey:
    return dg.AssetKey(["maintenance", f"{spec.layer}_{spec.table}"])


def _maintenance_asset(spec: TableSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=maintenance_key(spec),
        deps=[table_key(spec)],
        group_name="maintenance",
        kinds={"delta"},
        description=_description(spec),
        automation_condition=NIGHTLY_AFTER_CHANGES,
        pool=writer_pool(spec),
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30),
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8)),
        tags={"layer": spec.layer},
    )
    def maintain(
        context: dg.AssetExecutionContext, config: MaintenanceConfig, lake: LakeResource
    ) -> dg.MaterializeResult:
        opened = lake.open()
        before = opened.table_snapshot(spec)
        try:
            target = config.target_file_mb * 1024 * 1024
            compacted = opened.compact(spec, writer=WRITER, target_size_bytes=target)
            partition = cluster_partition(spec, config.cluster_partition)
            clustered = (
                opened.cluster(spec, partition, writer=WRITER, target_size_bytes=target)
                if partition is not None
                else None
            )
            deleted = opened.vacuum(spec, config.retention_hours, writer=WRITER)
        except TableNotFound:
            return dg.MaterializeResult(metadata={"skipped": f"{spec.name} does not exist yet"})
        after = opened.table_snapshot(spec)
        context.log.info(f"{spec.name}: {compacted.operation}; vacuum deleted {len(deleted)} files")
        return dg.MaterializeResult(
            metadata={
                **snapshot_metadata(after),
                "files_before": before.files if before else 0,
                "files_after": after.files if after else 0,
                "compaction": compacted.operation,
                "clustering": _clustering_note(partition, clustered),
                "vacuumed_files": len(deleted),
                "retention_hours": config.retention_hours,
            }
        )

    return maintain


MAINTAINED_TABLES = ALL_TABLES
"""Every table something writes."""

maintenance_assets = [_maintenance_asset(spec) for spec in MAINTAINED_TABLES]
