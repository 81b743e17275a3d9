"""The metadata catalog: what every lake table is, version by version, stored in the lake itself.

Two Delta tables under ``<lake>/_catalog/`` hold it, so it is as durable as the data and
needs no extra service:

- ``table_versions``: one row per Delta version of every table (location, operation, the
  writer and app transaction from the commit's lineage, code version, row and file counts,
  the schema as Delta JSON). The latest row of a table is its current state; the rows where
  the schema changed are its schema history.
- ``quality_checks``: one row per data-quality result (table, check, passed, details, the
  table version it looked at).

Both are append-only logs written with blind appends, which Delta commits concurrently
without conflicts, so any process that writes a lake table can record its versions. A version
recorded twice (two processes catching up the same gap) is removed when read.
The catalog catches up from the Delta log itself (``DeltaTable.history``), so a crash
between a table commit and its catalog row loses nothing: the next sync records the gap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from lake_schemas import delta
from lake_schemas.lineage import APP_ID_KEY, APP_VERSION_KEY, CODE_VERSION_KEY, WRITER_KEY
from lake_schemas.schema_check import conform
from lake_schemas.tables import TIMESTAMP, TableSpec

CATALOG_WRITER = "lake_schemas.catalog"
CATALOG_DIR = "_catalog"
COMPACT_AFTER_FILES = 64
"""Compact a catalog table once it holds this many small data files (one is added per record)."""
CATALOG_TARGET_FILE_BYTES = 16 * 1024 * 1024
"""Target size of a catalog table's compacted files. Files at or above half of it are left in
place, so a compaction rewrites the last ~64 records and one partly filled file, not the whole
table (which gains a row per table version: ~260,000 a day at one sidecar batch a second)."""
CATALOG_VACUUM_RETENTION_HOURS = 24
BACKFILL_EXACT_VERSIONS = 64
"""When catching up a gap, versions older than this many behind the current one are recorded
from the log alone (no row count or schema), so a long history does not load every snapshot."""


@dataclass(frozen=True)
class CatalogTableSpec(TableSpec):
    """A catalog table: lives under ``_catalog/``; SQL sees it as ``meta.<table>_log``."""

    @property
    def path(self) -> str:
        return f"{CATALOG_DIR}/{self.table}"


TABLE_VERSIONS = CatalogTableSpec(
    name="meta.table_versions",
    schema=pa.schema(
        [
            pa.field("table_name", pa.string(), False),
            pa.field("layer", pa.string(), False),
            pa.field("location", pa.string(), False),
            pa.field("version", pa.int64(), False),
            pa.field("committed_at", TIMESTAMP, True),
            pa.field("operation", pa.string(), True),
            pa.field("writer", pa.string(), True),
            pa.field("app_id", pa.string(), True),
            pa.field("app_version", pa.int64(), True),
            pa.field("code_version", pa.string(), True),
            pa.field("rows", pa.int64(), True),
            pa.field("files", pa.int64(), True),
            pa.field("schema_json", pa.string(), True),
            pa.field("recorded_at", TIMESTAMP, False),
        ]
    ),
    partition_by=(),
    primary_key=("table_name", "version"),
    description="One row per Delta version of every lake table, with its lineage.",
    owner=CATALOG_WRITER,
)

QUALITY_CHECKS = CatalogTableSpec(
    name="meta.quality_checks",
    schema=pa.schema(
        [
            pa.field("table_name", pa.string(), False),
            pa.field("check_name", pa.string(), False),
            pa.field("passed", pa.bool_(), False),
            pa.field("details_json", pa.string(), False),
            pa.field("table_version", pa.int64(), True),
            pa.field("checked_at", TIMESTAMP, False),
        ]
    ),
    partition_by=(),
    primary_key=("table_name", "check_name", "checked_at"),
    description="Data-quality results per table and check.",
    owner=CATALOG_WRITER,
)

CATALOG_TABLES: tuple[CatalogTableSpec, ...] = (TABLE_VERSIONS, QUALITY_CHECKS)


@dataclass(frozen=True)
class TableEntry:
    """The current state of one table as the catalog recorded it (its latest version row)."""

    name: str
    layer: str
    location: str
    version: int
    rows: int | None
    files: int | None
    writer: str | None
    operation: str | None
    committed_at: datetime | None
    app_id: str | None
    app_version: int | None
    code_version: str | None
    schema_json: str | None


@dataclass(frozen=True)
class SchemaVersion:
    """A schema a table had, from the version where it first appeared."""

    version: int
    committed_at: datetime | None
    schema_json: str

    @property
    def columns(self) -> list[str]:
        return [f["name"] for f in json.loads(self.schema_json)["fields"]]


@dataclass(frozen=True)
class QualityResult:
    table_name: str
    check_name: str
    passed: bool
    details: dict[str, Any]
    table_version: int | None
    checked_at: datetime


def table_location(root: str, table_name: str) -> str:
    """Where a ``layer.table`` lives below the lake root."""
    layer, _, table = table_name.partition(".")
    if not layer or not table:
        raise ValueError(f"table name {table_name!r} must be <layer>.<table>")
    return delta.join_uri(root, f"{layer}/{table}")


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _snapshot_counts(table: DeltaTable) -> tuple[int, int]:
    """Rows (from file statistics) and data files of the loaded snapshot."""
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0, 0
    records = actions.column("num_records").to_pylist()
    return sum(int(r) for r in records if r is not None), actions.num_rows


class MetadataCatalog:
    """Per-table versions, lineage, schema history and quality results, kept in the lake."""

    def __init__(
        self,
        root: str,
        storage_options: Mapping[str, str] | None = None,
        on_quality_recorded: Callable[[], None] | None = None,
        log_trimmer: delta.LogTrimmer | None = None,
    ) -> None:
        """``on_quality_recorded`` runs after each quality result is stored (the Lake uses it
        to refresh the DuckDB catalog file's ``meta`` views). ``log_trimmer``: the lake's
        bound on a local table's log, kept for the catalog's own tables too (they take a
        commit per batch of every writer)."""
        self.root = root
        self.storage_options = dict(storage_options) if storage_options else None
        self.on_quality_recorded = on_quality_recorded
        self._last_recorded: dict[str, int] | None = None
        self._tables = delta.OpenTables(self.storage_options)
        self._log_trimmer = log_trimmer

    # -- locations -------------------------------------------------------------------------
    def uri(self, spec: CatalogTableSpec) -> str:
        return delta.join_uri(self.root, spec.path)

    def _open(self, spec: CatalogTableSpec) -> DeltaTable | None:
        return self._tables.latest(self.uri(spec))

    # -- writing ---------------------------------------------------------------------------
    def _append(self, spec: CatalogTableSpec, rows: list[dict[str, Any]]) -> None:
        batch = conform(spec, pa.Table.from_pylist(rows, schema=spec.schema), None).data

        def attempt() -> DeltaTable:
            table = self._open(spec) or delta.create_if_missing(
                self.uri(spec), self.storage_options, spec, CATALOG_WRITER
            )
            write_deltalake(
                table,
                batch,
                mode="append",
                commit_properties=delta.commit_properties(CATALOG_WRITER),
            )
            return table

        table = delta.with_commit_retries(attempt)
        self._compact_when_fragmented(spec, table)
        if self._log_trimmer is not None:
            self._log_trimmer.after_commit(table)

    def _compact_when_fragmented(self, spec: CatalogTableSpec, table: DeltaTable) -> None:
        """Every record adds a small file; merge them once there are many."""
        delta.bring_forward(table)
        if delta.small_files(table, CATALOG_TARGET_FILE_BYTES).num_rows < COMPACT_AFTER_FILES:
            return
        try:
            table.optimize.compact(
                target_size=CATALOG_TARGET_FILE_BYTES,
                commit_properties=delta.commit_properties(CATALOG_WRITER),
            )
            table.vacuum(
                retention_hours=CATALOG_VACUUM_RETENTION_HOURS,
                dry_run=False,
                enforce_retention_duration=False,
            )
        except CommitFailedError:
            pass  # another process compacted it at the same time: nothing left to do

    def sync(self, table_name: str, table: DeltaTable) -> int:
        """Record every version of ``table`` the catalog does not have yet; returns how many.

        ``table`` is the loaded latest snapshot (the caller just committed to it).
        """
        rows = self.unrecorded_rows(table_name, table)
        self.record(rows)
        return len(rows)

    def unrecorded_rows(self, table_name: str, table: DeltaTable) -> list[dict[str, Any]]:
        """The ``table_versions`` rows of the versions of ``table`` not recorded yet, read now
        (while ``table`` is the snapshot just committed, so no older snapshot is loaded) and
        counted as recorded; :meth:`record` stores them, one commit for any number of tables.
        """
        current = table.version()
        last = self._recorded_versions().get(table_name, -1)
        if last >= current:
            return []
        history = table.history(limit=current - last)
        now = datetime.now(UTC)
        layer = table_name.partition(".")[0]
        location = table_location(self.root, table_name)
        rows: list[dict[str, Any]] = []
        for commit in history:
            version = int(commit["version"])
            if version <= last:
                continue
            snapshot: DeltaTable | None = None
            if version == current:
                snapshot = table
            elif current - version <= BACKFILL_EXACT_VERSIONS:
                snapshot = DeltaTable(
                    location, version=version, storage_options=self.storage_options
                )
            row_count = file_count = None
            schema_json = None
            if snapshot is not None:
                row_count, file_count = _snapshot_counts(snapshot)
                schema_json = snapshot.schema().to_json()
            app_version = commit.get(APP_VERSION_KEY)
            rows.append(
                {
                    "table_name": table_name,
                    "layer": layer,
                    "location": location,
                    "version": version,
                    "committed_at": _utc(commit.get("timestamp")),
                    "operation": commit.get("operation"),
                    "writer": commit.get(WRITER_KEY) or commit.get("engineInfo"),
                    "app_id": commit.get(APP_ID_KEY),
                    "app_version": None if app_version is None else int(app_version),
                    "code_version": commit.get(CODE_VERSION_KEY),
                    "rows": row_count,
                    "files": file_count,
                    "schema_json": schema_json,
                    "recorded_at": now,
                }
            )
        self._recorded_versions()[table_name] = current
        return rows

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Store rows from :meth:`unrecorded_rows` in one commit. If that fails, what was
        counted as recorded is forgotten, so the next sync finds the gap in the table's log."""
        if not rows:
            return
        try:
            self._append(
                TABLE_VERSIONS, sorted(rows, key=lambda r: (r["table_name"], r["version"]))
            )
        except BaseException:
            self._last_recorded = None
            raise

    def record_quality(
        self, table_name: str, check_name: str, passed: bool, details: Mapping[str, Any]
    ) -> None:
        """Store one data-quality result, tagged with the table version it looked at."""
        table = delta.open_table(table_location(self.root, table_name), self.storage_options)
        self._append(
            QUALITY_CHECKS,
            [
                {
                    "table_name": table_name,
                    "check_name": check_name,
                    "passed": bool(passed),
                    "details_json": json.dumps(dict(details), default=str, sort_keys=True),
                    "table_version": None if table is None else table.version(),
                    "checked_at": datetime.now(UTC),
                }
            ],
        )
        if self.on_quality_recorded is not None:
            self.on_quality_recorded()

    # -- reading ---------------------------------------------------------------------------
    def _read(self, spec: CatalogTableSpec) -> pa.Table:
        table = self._open(spec)
        if table is None:
            return spec.schema.empty_table()
        return table.to_pyarrow_table()

    def _query(self, sql: str, spec: CatalogTableSpec, *params: object) -> list[tuple]:
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("log", self._read(spec))
            return con.execute(sql, list(params)).fetchall()
        finally:
            con.close()

    def _recorded_versions(self) -> dict[str, int]:
        if self._last_recorded is None:
            rows = self._query(
                "SELECT table_name, max(version) FROM log GROUP BY table_name", TABLE_VERSIONS
            )
            self._last_recorded = {name: int(version) for name, version in rows}
        return self._last_recorded

    def versions(self, table_name: str) -> list[TableEntry]:
        """Every recorded version of a table, oldest first."""
        rows = self._query(
            f"SELECT {_ENTRY_COLUMNS} FROM (SELECT DISTINCT ON (version) * FROM log "
            "WHERE table_name = ? ORDER BY version, recorded_at) ORDER BY version",
            TABLE_VERSIONS,
            table_name,
        )
        return [TableEntry(*row) for row in rows]

    def tables(self) -> list[TableEntry]:
        """The latest recorded version of every table, by name."""
        rows = self._query(
            f"SELECT {_ENTRY_COLUMNS} FROM (SELECT DISTINCT ON (table_name) * FROM log "
            "ORDER BY table_name, version DESC, recorded_at) ORDER BY table_name",
            TABLE_VERSIONS,
        )
        return [TableEntry(*row) for row in rows]

    def table(self, table_name: str) -> TableEntry | None:
        versions = self.versions(table_name)
        return versions[-1] if versions else None

    def schema_history(self, table_name: str) -> list[SchemaVersion]:
        """The table's schemas in order, each from the first version that had it."""
        history: list[SchemaVersion] = []
        for entry in self.versions(table_name):
            if entry.schema_json is None:
                continue
            if history and history[-1].schema_json == entry.schema_json:
                continue
            history.append(SchemaVersion(entry.version, entry.committed_at, entry.schema_json))
        return history

    def quality(self, table_name: str) -> list[QualityResult]:
        """The latest result of every check run on the table."""
        rows = self._query(
            "SELECT DISTINCT ON (check_name) table_name, check_name, passed, details_json, "
            "table_version, checked_at FROM log WHERE table_name = ? "
            "ORDER BY check_name, checked_at DESC",
            QUALITY_CHECKS,
            table_name,
        )
        return [
            QualityResult(name, check, passed, json.loads(details), version, checked_at)
            for name, check, passed, details, version, checked_at in rows
        ]


_ENTRY_COLUMNS = (
    "table_name, layer, location, version, rows, files, writer, operation, committed_at, "
    "app_id, app_version, code_version, schema_json"
)
