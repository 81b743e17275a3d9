"""Retention of raw audio: bronze PCM is kept a set number of days, then removed by partition.

``bronze.audio_chunks`` is partitioned by ``ingest_date`` (the UTC day a chunk reached the
gateway), so expiring a day is a Delta ``DELETE`` of one whole partition: delta-rs removes the
partition's files from the table without rewriting any other file, and a concurrent append to
today's partition (the sidecar) does not conflict with it. One commit per day, oldest first,
so an interrupted run leaves whole days and the next run carries on. Silver and gold keep their
rows (events, sessions, features); only the audio goes.

The deleted files stay on storage, readable by time travel to a version before the delete,
until a vacuum older than the vacuum retention removes them (see docs/lake.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pyarrow as pa

from lake_schemas import delta
from lake_schemas.lake import Lake
from lake_schemas.tables import AUDIO_CHUNKS, TableSpec

WRITER = "lake_schemas.retention"
RETENTION_COLUMN = "ingest_date"


@dataclass
class RetentionResult:
    """What one retention run removed."""

    cutoff: date
    """Partitions before this day were removed."""
    removed: dict[str, int] = field(default_factory=dict)
    """Partition day (ISO) → rows removed."""
    vacuumed_files: int = 0


def partitions(lake: Lake, spec: TableSpec = AUDIO_CHUNKS) -> list[date]:
    """The table's ``ingest_date`` partitions, from the Delta log (no data file is read)."""
    table = delta.open_table(lake.uri(spec), lake.storage_options)
    if table is None:
        return []
    actions = pa.table(table.get_add_actions(flatten=True))
    name = f"partition.{RETENTION_COLUMN}"
    if name not in actions.column_names:
        return []
    days = {
        d if isinstance(d, date) else date.fromisoformat(str(d))
        for d in actions[name].to_pylist()
        if d
    }
    return sorted(days)


def expire_partitions(
    lake: Lake,
    keep_days: int,
    today: date,
    *,
    vacuum_retention_hours: float | None = None,
    spec: TableSpec = AUDIO_CHUNKS,
) -> RetentionResult:
    """Delete every partition older than ``keep_days`` days before ``today``, one per commit.

    With ``vacuum_retention_hours``, vacuum afterwards (removed files older than that go).
    """
    if keep_days < 1:
        raise ValueError(f"keep_days={keep_days} must be >= 1")
    cutoff = today - timedelta(days=keep_days)
    result = RetentionResult(cutoff)
    for day in partitions(lake, spec):
        if day >= cutoff:
            break

        def attempt(day: date = day) -> int:
            table = delta.open_table(lake.uri(spec), lake.storage_options)
            assert table is not None
            metrics = table.delete(
                f"{RETENTION_COLUMN} = '{day.isoformat()}'",
                commit_properties=delta.commit_properties(WRITER),
            )
            lake.catalog.sync(spec.name, table)
            return int(metrics.get("num_deleted_rows", 0))

        result.removed[day.isoformat()] = delta.with_commit_retries(attempt)
    if result.removed:
        lake.refresh_sql_catalog()
        if vacuum_retention_hours is not None:
            result.vacuumed_files = len(lake.vacuum(spec, vacuum_retention_hours, writer=WRITER))
    return result
