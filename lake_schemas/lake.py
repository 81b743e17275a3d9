"""The ``Lake``: the one way Sonolake code reads and writes its Delta tables.

Every write goes through the same steps: check the batch against the table's spec (refuse it,
untouched, when it does not match), create the table if it is missing, skip the write when its
app transaction is already committed, commit with lineage in the commit metadata, retry when
the commit lost a race, then record the new version in the metadata catalog and refresh the
DuckDB catalog file.

One app_id belongs to one writer. Delta records an application transaction
``(app_id, version)`` with a commit but does not refuse a version that is not newer than the
one it holds (it silently records the older one), so "already committed?" is checked here,
against the table's ``transaction_version(app_id)``. Two writers sharing an app_id would race
between that check and their commits; give each writer (each sidecar, each Dagster asset) its
own app_id and the check is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable, Field, write_deltalake
from deltalake.exceptions import DeltaError

from lake_schemas import delta
from lake_schemas.catalog import (
    CATALOG_TABLES,
    MetadataCatalog,
    table_location,
)
from lake_schemas.errors import TableNotFound, VersionNotFound
from lake_schemas.schema_check import Conformed, conform
from lake_schemas.sql_catalog import (
    ViewSource,
    connect_in_memory,
    file_layout,
    lock_read_only,
    parquet_columns,
    write_catalog_file,
)
from lake_schemas.tables import ALL_TABLES, TableSpec

log = logging.getLogger(__name__)

Filter: TypeAlias = (
    pc.Expression | Sequence[tuple[str, str, Any]] | Sequence[Sequence[tuple[str, str, Any]]]
)
"""A row filter: a pyarrow expression, or DNF tuples like ``[("device_id", "=", "d1")]``."""

CATALOG_FILE_NAME = "catalog.duckdb"
SQL_LOG_SUFFIX = "_log"
"""Catalog tables appear in SQL as ``catalog.<table>_log``; views over them drop the suffix."""


LOG_KEEP_COMMITS = 200
"""Commits kept in a local table's log: time travel by version or time reaches back at least
this far (~3 minutes at the sidecar's one micro-batch a second; a table an asset writes daily
keeps its whole 7-day retention). Bounds what delta-rs lists and stats on every local commit
(~10 µs per kept entry, so 1,000 kept commits cost ~10 ms on each ~25-ms commit); an
object-store lake lists from an offset and keeps Delta's time retention (``TABLE_PROPERTIES``)
alone."""


@dataclass(frozen=True)
class CompactionPolicy:
    """When a table's owner merges small files itself, right after its own commit.

    A streaming writer adds a file per partition per commit (at one micro-batch a second,
    ~86,000 a day), so waiting for the nightly maintenance would slow every read and commit
    hour by hour. After each write, every partition the write touched that now holds
    ``min_files`` *small* files (under half the target:
    :func:`~lake_schemas.delta.small_file_bytes`) is
    compacted with Delta's optimize, which bin-packs every file below the target into files of
    about the target. The owner does it between its own commits, so it never races another
    writer of the table; the OPTIMIZE commit carries no app transaction and changes no row, so
    exactly-once is unaffected. The owner also bounds a local table's log (``log_commits``),
    for the same reason: what every commit pays for must not grow with the table's age.

    Why half the target, not the target: optimize's bins are never filled exactly, so a large
    partition soon holds ``min_files`` files just under the target that no compaction can
    merge further. Counting those, a partition of 32 files of ~16 MB compacted on every
    commit, rewriting its one partly filled file (up to 16 MB) to absorb each new 64-kB file
    (measured: one OPTIMIZE per append once a day's audio passed ~600 MB). Two files under
    half the target always fit in one, and optimize's first-fit leaves at most one output
    under half, so a compaction runs once per ``min_files`` commits and a partition holds at
    most ``min_files`` small files plus one file per half target of data; the nightly
    maintenance asset merges the results further (128 MB).
    """

    min_files: int = 32
    """Small files in one partition that trigger a compaction (0: never)."""
    target_file_bytes: int = 16 * 1024 * 1024
    """Optimize's target file size, bytes; files at or above it are left alone."""
    log_commits: int = LOG_KEEP_COMMITS
    """Commits a local table's log keeps (0: Delta's time retention alone); see
    :func:`~lake_schemas.delta.trim_local_log`."""

    @property
    def enabled(self) -> bool:
        return self.min_files > 0


@dataclass(frozen=True)
class CommitResult:
    """What one write did.

    ``version`` is the table's Delta version after the write, or its current version when
    the write was ``skipped`` because its app transaction was already committed.
    """

    table: str
    version: int
    skipped: bool = False
    rows: int = 0
    """Rows appended, inserted or updated by this write (0 when skipped)."""
    operation: str = "append"


@dataclass(frozen=True)
class TableSnapshot:
    """A table's current state as its Delta log tells it (no data file is read)."""

    version: int
    rows: int
    """Sum of the data files' record counts (file statistics)."""
    files: int
    last_commit_at: datetime | None
    location: str


def _normalize_root(root: str | Path) -> str:
    text = str(root)
    if delta.is_remote(text):
        return text.rstrip("/")
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


def _check_app_transaction(app_id: str | None, app_version: int | None) -> None:
    if (app_id is None) != (app_version is None):
        raise ValueError("give both app_id and app_version, or neither")
    if app_version is not None and (isinstance(app_version, bool) or app_version < 0):
        raise ValueError(f"app_version={app_version!r} must be an integer >= 0")


def _as_expression(filter: Filter | None) -> pc.Expression | None:
    if filter is None or isinstance(filter, pc.Expression):
        return filter
    return pq.filters_to_expression(filter)


def _read_without_statistics(
    dataset: pads.Dataset, columns: list[str] | None, expression: pc.Expression
) -> pa.Table:
    """Filter after reading, pruning partitions only.

    Files that delta-rs writes through DataFusion (merges, upserts) declare their strings as
    ``string_view`` in the embedded Arrow schema, and pyarrow cannot yet compare a ``string``
    literal with ``string_view`` row-group statistics (ArrowNotImplementedError). Partition
    pruning still applies; rows are filtered in memory.
    """
    assert isinstance(dataset, pads.FileSystemDataset)
    fragments = list(dataset.get_fragments(filter=expression))
    pruned = pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
    table = pruned.to_table().filter(expression)
    return table.select(columns) if columns is not None else table


class Lake:
    """Delta tables under one root (a local folder or ``s3://bucket/prefix``)."""

    def __init__(
        self,
        root: str | Path,
        storage_options: Mapping[str, str] | None = None,
        catalog_file: Path | None = None,
        compaction: CompactionPolicy | None = None,
    ) -> None:
        """``catalog_file``: the DuckDB catalog kept in step with every commit. Default:
        ``<root>/catalog.duckdb`` for a local lake; none for an object-store lake (see
        :meth:`refresh_sql_catalog`). ``compaction``: when a writer compacts the partitions
        it wrote (default :class:`CompactionPolicy`; ``CompactionPolicy(min_files=0)``: never)."""
        self.root = _normalize_root(root)
        self.storage_options: dict[str, str] | None = (
            dict(storage_options) if storage_options else None
        )
        self.is_remote = delta.is_remote(self.root)
        if catalog_file is None and not self.is_remote:
            catalog_file = Path(self.root) / CATALOG_FILE_NAME
        self.catalog_file = Path(catalog_file) if catalog_file is not None else None
        self.compaction = compaction or CompactionPolicy()
        self._log_trimmer = delta.LogTrimmer(self.compaction.log_commits)
        self.catalog = MetadataCatalog(
            self.root,
            self.storage_options,
            on_quality_recorded=self._refresh_quietly,
            log_trimmer=self._log_trimmer,
        )
        self._specs: dict[str, TableSpec] = {spec.name: spec for spec in ALL_TABLES}
        self._deferring = 0
        self._refresh_pending = False
        self._unrecorded: list[dict[str, Any]] = []
        self._tables = delta.OpenTables(self.storage_options)
        self._views: dict[str, ViewSource] = {}
        """The catalog file's view of each table at its last refresh, reused while the table's
        version is unchanged (a refresh then costs one log check per unchanged table)."""

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # -- tables --------------------------------------------------------------------------------
    def uri(self, spec: TableSpec) -> str:
        """Where the table lives: ``<root>/<layer>/<table>``."""
        return delta.join_uri(self.root, spec.path)

    def uri_of(self, table_name: str) -> str:
        """Where a table lives, by its ``layer.table`` name."""
        return table_location(self.root, table_name)

    def _open(self, spec: TableSpec) -> DeltaTable | None:
        """The table's latest snapshot (kept open between calls; see ``delta.OpenTables``)."""
        return self._tables.latest(self.uri(spec))

    def exists(self, spec: TableSpec) -> bool:
        return DeltaTable.is_deltatable(self.uri(spec), storage_options=self.storage_options)

    def version(self, spec: TableSpec) -> int | None:
        """The table's current Delta version, or None when it was never created."""
        table = self._open(spec)
        return None if table is None else table.version()

    def transaction_version(self, spec: TableSpec, app_id: str) -> int | None:
        """The highest app-transaction version committed by ``app_id`` (None: never)."""
        table = self._open(spec)
        return None if table is None else table.transaction_version(app_id)

    def table_snapshot(self, spec: TableSpec) -> TableSnapshot | None:
        """Version, rows, files and last commit of the table, or None when it does not exist.

        Read from the Delta log only, so observing a large table costs milliseconds.
        """
        table = self._open(spec)
        if table is None:
            return None
        actions = pa.table(table.get_add_actions(flatten=True))
        rows = 0
        if actions.num_rows:
            counts = actions.column("num_records").to_pylist()
            rows = sum(int(count) for count in counts if count is not None)
        history = table.history(1)
        stamp = history[0].get("timestamp") if history else None
        committed = datetime.fromtimestamp(stamp / 1000, tz=UTC) if stamp else None
        return TableSnapshot(table.version(), rows, actions.num_rows, committed, self.uri(spec))

    def history(self, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        """Delta commit infos, newest first, each with its lineage keys and ``version``."""
        table = self._open(spec)
        return [] if table is None else table.history(limit)

    def ensure(self, spec: TableSpec, *, writer: str) -> int:
        """Create the table (empty, with the spec's schema) if missing; returns its version."""
        self._specs[spec.name] = spec
        table = self._create(spec, writer)
        self._after_commit(spec, table)
        return table.version()

    def _create(self, spec: TableSpec, writer: str) -> DeltaTable:
        return delta.create_if_missing(self.uri(spec), self.storage_options, spec, writer)

    # -- writes --------------------------------------------------------------------------------
    def append(
        self,
        spec: TableSpec,
        data: pa.Table,
        *,
        writer: str,
        app_id: str | None = None,
        app_version: int | None = None,
    ) -> CommitResult:
        """Append rows; with ``app_id``, skip when ``app_version`` is already committed."""
        return self._write(spec, data, "append", writer, app_id, app_version)

    def merge_insert(
        self,
        spec: TableSpec,
        data: pa.Table,
        *,
        writer: str,
        app_id: str | None = None,
        app_version: int | None = None,
    ) -> CommitResult:
        """Insert the rows whose primary key is not in the table yet (and once per key)."""
        return self._write(spec, data, "merge_insert", writer, app_id, app_version)

    def upsert(
        self,
        spec: TableSpec,
        data: pa.Table,
        *,
        writer: str,
        app_id: str | None = None,
        app_version: int | None = None,
        within: Sequence[str] | None = None,
    ) -> CommitResult:
        """Update rows whose primary key exists (last one in the batch wins), insert the rest.

        ``within``: the only partitions (values of the table's one partition column) where
        the rows' keys can already be, when the caller knows; the merge then reads those
        partitions' files instead of the whole table's. A key outside them is inserted, so
        the caller must be sure."""
        return self._write(spec, data, "upsert", writer, app_id, app_version, within)

    def _write(
        self,
        spec: TableSpec,
        data: pa.Table,
        operation: str,
        writer: str,
        app_id: str | None,
        app_version: int | None,
        within: Sequence[str] | None = None,
    ) -> CommitResult:
        _check_app_transaction(app_id, app_version)
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if operation != "append" and not spec.primary_key:
            raise ValueError(f"{operation} needs a primary key; {spec.name} has none")
        self._specs[spec.name] = spec
        committed: list[DeltaTable] = []

        def attempt() -> CommitResult:
            table = self._open(spec)
            if table is not None and app_id is not None:
                done = table.transaction_version(app_id)
                if done is not None and app_version is not None and done >= app_version:
                    return CommitResult(
                        spec.name, table.version(), skipped=True, operation=operation
                    )
            stored = None if table is None else pa.schema(table.schema().to_arrow())
            conformed = conform(spec, data, stored)  # raises before anything is written
            if table is None:
                table = self._create(spec, writer)
            self._evolve(table, conformed, writer)
            rows = self._commit(
                spec, table, conformed.data, operation, writer, app_id, app_version, within
            )
            committed.append(table)
            return CommitResult(spec.name, table.version(), rows=rows, operation=operation)

        result = delta.with_commit_retries(attempt)
        if committed:
            table = committed[-1]
            if result.rows:
                self._compact_touched(spec, table, data, writer)
            self._after_commit(spec, table)
        return result

    def _compact_touched(
        self, spec: TableSpec, table: DeltaTable, data: pa.Table, writer: str
    ) -> None:
        """Compact the partitions this write touched that hold the policy's count of small files."""
        policy = self.compaction
        if not policy.enabled:
            return
        columns = list(table.metadata().partition_columns)
        small = delta.small_files(table, policy.target_file_bytes)
        if small.num_rows < policy.min_files:
            return
        keys = [f"partition.{c}" for c in columns]
        counts = small.group_by(keys).aggregate([("path", "count")]) if keys else small
        if keys:
            touched = data.select(columns).group_by(columns).aggregate([])
            wanted = {tuple(str(v) for v in row.values()) for row in touched.to_pylist()}
            crowded = [
                tuple(str(row[k]) for k in keys)
                for row in counts.to_pylist()
                if row["path_count"] >= policy.min_files
            ]
            partitions = [p for p in crowded if p in wanted]
        else:
            partitions = [()]
        for values in partitions:
            filters = [(c, "=", v) for c, v in zip(columns, values, strict=True)] or None
            try:
                table.optimize.compact(
                    partition_filters=filters,
                    target_size=policy.target_file_bytes,
                    commit_properties=delta.commit_properties(f"{writer} (auto-compaction)"),
                )
            except DeltaError:
                log.warning("auto-compaction of %s %s failed", spec.name, values, exc_info=True)
            delta.bring_forward(table)

    def _evolve(self, table: DeltaTable, conformed: Conformed, writer: str) -> None:
        """Additive schema evolution: add the spec's new nullable columns in their own commit."""
        if not conformed.new_columns:
            return
        table.alter.add_columns(
            [Field.from_arrow(field) for field in conformed.new_columns],
            commit_properties=delta.commit_properties(writer),
        )
        delta.bring_forward(table)

    def _commit(
        self,
        spec: TableSpec,
        table: DeltaTable,
        data: pa.Table,
        operation: str,
        writer: str,
        app_id: str | None,
        app_version: int | None,
        within: Sequence[str] | None = None,
    ) -> int:
        """Commit the batch; returns the rows it added or changed."""
        properties = delta.commit_properties(writer, app_id, app_version)
        if operation == "append":
            write_deltalake(table, data, mode="append", commit_properties=properties)
            delta.bring_forward(table)
            return data.num_rows
        keep = "first" if operation == "merge_insert" else "last"
        source = delta.dedupe_on_key(data, spec.primary_key, keep=keep)
        nullable = [c for c in spec.primary_key if spec.schema.field(c).nullable]
        before = table.version()
        predicate = delta.key_predicate(spec.primary_key, nullable)
        if within is not None:
            predicate += " AND " + delta.partition_predicate(spec.partition_by, within)
        merger = table.merge(
            source,
            predicate,
            source_alias="s",
            target_alias="t",
            commit_properties=properties,
        )
        if operation == "upsert":
            merger = merger.when_matched_update_all()
        metrics = merger.when_not_matched_insert_all().execute()
        delta.bring_forward(table)
        if table.version() == before and app_id is not None:
            # Nothing to insert: delta-rs makes no commit, so record the app transaction in an
            # empty one, or a replay of this batch would not know it was already applied.
            write_deltalake(
                table, data.schema.empty_table(), mode="append", commit_properties=properties
            )
            delta.bring_forward(table)
        return int(metrics.get("num_target_rows_inserted", 0)) + int(
            metrics.get("num_target_rows_updated", 0)
        )

    # -- maintenance ---------------------------------------------------------------------------
    def compact(
        self, spec: TableSpec, *, writer: str = "lake.compact", target_size_bytes: int | None = None
    ) -> CommitResult:
        """Merge small files (same rows, fewer files). Run it where nothing else writes the
        table at the same time, e.g. as its own serialized Dagster asset."""
        return self._optimize(
            spec,
            "compact",
            lambda table: table.optimize.compact(
                target_size=target_size_bytes, commit_properties=delta.commit_properties(writer)
            ),
        )

    def cluster(
        self,
        spec: TableSpec,
        partition: Mapping[str, str],
        *,
        writer: str = "lake.cluster",
        target_size_bytes: int | None = None,
    ) -> CommitResult:
        """Z-order one partition by the spec's ``cluster_by`` columns (same rows, one OPTIMIZE
        commit; ``skipped`` for a table without them or a partition with no files).

        Rewrites the whole partition, so it is for a partition that no longer grows (the
        nightly maintenance clusters yesterday's); run it where nothing else compacts the
        table at the same time, as :meth:`compact`.
        """
        filters = [(column, "=", value) for column, value in partition.items()]
        table = self._open(spec)
        if table is not None and (not spec.cluster_by or not table.file_uris(filters)):
            return CommitResult(spec.name, table.version(), skipped=True, operation="cluster")
        return self._optimize(
            spec,
            f"cluster by {', '.join(spec.cluster_by)}",
            lambda table: table.optimize.z_order(
                list(spec.cluster_by),
                partition_filters=filters,
                target_size=target_size_bytes,
                commit_properties=delta.commit_properties(writer),
            ),
        )

    def _optimize(
        self, spec: TableSpec, label: str, run: Callable[[DeltaTable], dict[str, Any]]
    ) -> CommitResult:
        """One OPTIMIZE of the latest snapshot (retried on a commit conflict), recorded."""
        table = self._open(spec)
        if table is None:
            raise TableNotFound(f"{spec.name} does not exist yet; nothing to {label}")
        before = table.version()

        def attempt() -> tuple[DeltaTable, dict[str, Any]]:
            fresh = self._open(spec)
            assert fresh is not None
            metrics = run(fresh)
            delta.bring_forward(fresh)
            return fresh, metrics

        table, metrics = delta.with_commit_retries(attempt)
        if table.version() != before:
            self._after_commit(spec, table)
        return CommitResult(
            spec.name,
            table.version(),
            skipped=table.version() == before,
            rows=0,
            operation=f"{label}: {metrics.get('numFilesRemoved', 0)} files into "
            f"{metrics.get('numFilesAdded', 0)}",
        )

    def vacuum(
        self, spec: TableSpec, retention_hours: float, *, writer: str = "lake.vacuum"
    ) -> list[str]:
        """Delete files no version newer than ``retention_hours`` needs; returns them.

        Time travel to versions older than the retention stops working for the deleted files.
        """
        if retention_hours < 0:
            raise ValueError(f"retention_hours={retention_hours} must be >= 0")
        table = self._open(spec)
        if table is None:
            raise TableNotFound(f"{spec.name} does not exist yet; nothing to vacuum")
        deleted = table.vacuum(
            retention_hours=int(retention_hours),
            dry_run=False,
            enforce_retention_duration=False,
            commit_properties=delta.commit_properties(writer),
        )
        delta.bring_forward(table)
        self._after_commit(spec, table)
        return list(deleted)

    # -- reads ---------------------------------------------------------------------------------
    def _snapshot(
        self, spec: TableSpec, version: int | None, as_of: datetime | None
    ) -> DeltaTable | None:
        if version is not None and as_of is not None:
            raise ValueError("give version or as_of, not both")
        if version is None and as_of is None:
            return self._open(spec)
        table = delta.open_table(self.uri(spec), self.storage_options)
        if table is None:
            if version is not None or as_of is not None:
                raise TableNotFound(f"{spec.name} does not exist; no version to travel to")
            return None
        if version is None and as_of is None:
            return table
        if version is not None:
            return delta.load_version(spec.name, table, int(version))
        assert as_of is not None
        try:
            delta.travel_to_time(spec.name, table, as_of)
        except (DeltaError, OSError, ValueError) as exc:
            raise VersionNotFound(f"{spec.name} has no version as of {as_of}: {exc}") from exc
        return table

    def dataset(
        self, spec: TableSpec, *, version: int | None = None, as_of: datetime | None = None
    ) -> pads.Dataset:
        """The table (latest, a version, or as of a time) as an Arrow dataset.

        A table that was never written reads as an empty dataset with the spec's schema.
        """
        table = self._snapshot(spec, version, as_of)
        if table is None:
            return pads.dataset(spec.schema.empty_table())
        return table.to_pyarrow_dataset()

    def read(
        self,
        spec: TableSpec,
        *,
        columns: Sequence[str] | None = None,
        filter: Filter | None = None,
        version: int | None = None,
        as_of: datetime | None = None,
    ) -> pa.Table:
        """Read rows into memory, pushing the filter down (partitions, row-group statistics)."""
        dataset = self.dataset(spec, version=version, as_of=as_of)
        wanted = list(columns) if columns is not None else None
        expression = _as_expression(filter)
        if expression is None:
            return dataset.to_table(columns=wanted)
        try:
            return dataset.to_table(columns=wanted, filter=expression)
        except pa.ArrowNotImplementedError:
            return _read_without_statistics(dataset, wanted, expression)

    # -- catalog -------------------------------------------------------------------------------
    def _after_commit(self, spec: TableSpec, table: DeltaTable) -> None:
        """Record the new version(s) and refresh SQL, or, inside :meth:`batch`, note them for
        its end. The data commit already succeeded, so a failure here is logged, not raised:
        the next commit's sync records the gap from the table's log."""
        self._log_trimmer.after_commit(table)
        try:
            self._unrecorded.extend(self.catalog.unrecorded_rows(spec.name, table))
        except Exception:
            log.warning("could not read %s's new versions", spec.name, exc_info=True)
        if not self._deferring:
            self._record_unrecorded()
        self._refresh_quietly()

    def _record_unrecorded(self) -> None:
        """One catalog commit for every version noted since the last; a failure is logged
        (the catalog forgets what it counted, so the next sync finds the gap)."""
        rows, self._unrecorded = self._unrecorded, []
        try:
            self.catalog.record(rows)
        except Exception:
            log.warning(
                "could not record %d table versions in the catalog", len(rows), exc_info=True
            )

    @contextmanager
    def batch(self) -> Iterator[None]:
        """A block of commits recorded together: one metadata catalog commit and one rebuild
        of the DuckDB catalog file at its end, not one of each per table commit.

        For a writer that commits several tables together (the sidecar lands bronze, silver
        and gold per micro-batch): analysts see the tables change together, and the catalog's
        own log grows by one commit a batch, not one per table (its commit cost, like any
        local Delta table's, grows with the commit files its log holds). A crash inside the
        block loses no catalog row: the next sync of each table records the gap.
        """
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring:
                self._record_unrecorded()
                if self._refresh_pending:
                    self._refresh_pending = False
                    self._refresh_quietly()

    def _refresh_quietly(self) -> None:
        if self._deferring:
            self._refresh_pending = True
            return
        try:
            self.refresh_sql_catalog()
        except Exception:
            log.warning("could not refresh the DuckDB catalog file", exc_info=True)

    def table_names(self) -> list[str]:
        """Every lake table SQL can name: the specs, plus any other table found in the lake."""
        names = set(self._specs)
        if self.is_remote:
            names.update(entry.name for entry in self.catalog.tables())
        else:
            for log_dir in Path(self.root).glob("*/*/_delta_log"):
                layer, table = log_dir.parent.parent.name, log_dir.parent.name
                if not layer.startswith(("_", ".")):
                    names.add(f"{layer}.{table}")
        return sorted(names)

    def view_sources(
        self,
        versions: Mapping[str, int] | None = None,
        as_of: datetime | None = None,
        *,
        in_process: bool = False,
    ) -> list[ViewSource]:
        """Each table pinned to a snapshot: latest, ``versions[name]``, or as of a time.

        A table that did not exist yet (never written, or created after ``as_of``) becomes an
        empty view with its spec's schema, so queries still bind.
        """
        versions = dict(versions or {})
        unknown = sorted(set(versions) - set(self.table_names()))
        if unknown:
            raise TableNotFound(
                f"unknown table(s) {', '.join(unknown)}; known: {', '.join(self.table_names())}"
            )
        sources = []
        for name in self.table_names():
            uri = table_location(self.root, name)
            spec = self._specs.get(name)
            sources.append(
                self._view_source(name, uri, spec, versions.get(name), as_of, in_process)
            )
        for spec in CATALOG_TABLES:
            name = spec.name + SQL_LOG_SUFFIX
            sources.append(
                self._view_source(name, self.catalog.uri(spec), spec, None, None, in_process)
            )
        return sources

    def _view_source(
        self,
        name: str,
        uri: str,
        spec: TableSpec | None,
        version: int | None,
        as_of: datetime | None,
        in_process: bool,
    ) -> ViewSource:
        latest = version is None and as_of is None and not in_process
        if latest:
            table = self._tables.latest(uri)
            cached = self._views.get(name)
            if table is not None and cached is not None and cached.version == table.version():
                return cached
        else:
            table = delta.open_table(uri, self.storage_options)
        if table is not None and version is not None:
            table = delta.load_version(name, table, int(version))
        elif table is not None and as_of is not None:
            try:
                delta.travel_to_time(name, table, as_of)
            except (DeltaError, OSError, ValueError):
                table = None  # created after that time: empty then
        if table is None:
            if version is not None:
                raise VersionNotFound(f"{name} does not exist; it has no version {version}")
            schema = spec.schema if spec is not None else pa.schema([])
            partition_by = spec.partition_by if spec is not None else ()
            return ViewSource(name, schema, partition_by, (), None)
        schema = pa.schema(table.schema().to_arrow())
        partition_by = tuple(table.metadata().partition_columns)
        actions = pa.table(table.get_add_actions(flatten=True))
        files = tuple(table.file_uris())
        union_by_name, absent = file_layout(
            actions,
            schema,
            partition_by,
            table.metadata().configuration,
            files,
            None if self.is_remote else parquet_columns,
        )
        source = ViewSource(
            name,
            schema,
            partition_by,
            files,
            table.version(),
            dataset=table.to_pyarrow_dataset() if in_process and self.is_remote else None,
            union_by_name=union_by_name,
            absent_columns=absent,
        )
        if latest:
            self._views[name] = source
        return source

    def refresh_sql_catalog(self) -> Path | None:
        """Rewrite the DuckDB catalog file from the tables' current snapshots (atomically).

        Returns the file, or None when there is none to keep: no ``catalog_file``, or an
        object-store lake, whose files DuckDB could only read with its httpfs extension (a
        download); query those with :meth:`connect_sql` (``sonolake sql``) instead.
        """
        if self.catalog_file is None or self.is_remote:
            return None
        return write_catalog_file(self.catalog_file, lambda: self.view_sources())

    def connect_sql(
        self,
        versions: Mapping[str, int] | None = None,
        as_of: datetime | None = None,
        *,
        read_only: bool = False,
    ) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table (``silver.audio_events``)
        and the ``meta`` views; any table pinned to ``versions[name]`` or ``as_of``.

        Works on local and object-store lakes alike (the latter through Arrow datasets).
        ``read_only``: the connection may read the snapshots' files and nothing else, and its
        settings are locked (for SQL written by someone else: ``sonolake sql``); run only
        :func:`~lake_schemas.sql_catalog.read_only_statement` on it.
        """
        sources = self.view_sources(versions, as_of, in_process=True)
        con = connect_in_memory(sources)
        if read_only:
            lock_read_only(con, sources)
        return con

    def register(self, specs: Iterable[TableSpec]) -> None:
        """Make extra table specs known for SQL before they are first written."""
        for spec in specs:
            self._specs[spec.name] = spec
