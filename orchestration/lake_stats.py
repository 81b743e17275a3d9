"""What an asset reports about a lake table: Delta version, rows, files, last commit.

Read from the Delta log only (file statistics), never from the data, so observing a large
table costs milliseconds. The version doubles as the Dagster data version of an observed
table: a new version means new data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

from lake_schemas.tables import TableSpec
from orchestration.resources import LakeResource


@dataclass(frozen=True)
class TableSnapshot:
    version: int
    rows: int
    files: int
    last_commit_at: datetime | None
    location: str


def table_snapshot(lake: LakeResource, spec: TableSpec) -> TableSnapshot | None:
    """The current snapshot of ``spec``'s Delta table, or None when it does not exist yet."""
    uri = lake.table_uri(spec.path)
    options = lake.storage_options() or None
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    table = DeltaTable(uri, storage_options=options)
    actions = pa.table(table.get_add_actions(flatten=True))
    rows = 0
    if actions.num_rows:
        rows = sum(int(r) for r in actions.column("num_records").to_pylist() if r is not None)
    history = table.history(1)
    stamp = history[0].get("timestamp") if history else None
    committed = datetime.fromtimestamp(stamp / 1000, tz=UTC) if stamp else None
    return TableSnapshot(table.version(), rows, actions.num_rows, committed, uri)


def snapshot_metadata(snapshot: TableSnapshot | None) -> dict[str, Any]:
    """Asset metadata for a snapshot: row count (plotted by the UI), version, files, location."""
    if snapshot is None:
        return {"dagster/row_count": 0, "exists": False}
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(snapshot.rows),
        "delta_version": dg.MetadataValue.int(snapshot.version),
        "data_files": dg.MetadataValue.int(snapshot.files),
        "location": dg.MetadataValue.path(snapshot.location),
    }
    if snapshot.last_commit_at is not None:
        metadata["last_commit_at"] = dg.MetadataValue.timestamp(snapshot.last_commit_at)
    return metadata


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The spec's columns as Dagster table-schema metadata (shown on the asset page)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f.name,
                type=str(f.type),
                description=spec.column_docs.get(f.name),
                constraints=dg.TableColumnConstraints(nullable=f.nullable),
            )
            for f in spec.schema
        ]
    )


def table_definition_metadata(spec: TableSpec) -> dict[str, Any]:
    """Metadata every lake-table asset declares: its SQL name, schema, key, partitions, writer."""
    return {
        "dagster/table_name": spec.name,
        "dagster/column_schema": column_schema(spec),
        "primary_key": ", ".join(spec.primary_key),
        "partitioned_by": ", ".join(spec.partition_by),
        "writer": spec.owner,
    }
