"""What the UI shows about a lake table: Delta version, rows, files, last commit, schema.

The numbers come from :meth:`lake_schemas.Lake.table_snapshot` (the Delta log only, never the
data, so observing a large table costs milliseconds). The version doubles as the Dagster data
version of an observed table: a new version means new data.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from lake_schemas import TableSnapshot
from lake_schemas.tables import TableSpec


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
