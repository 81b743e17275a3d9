"""SQL over the lake with DuckDB: the catalog file analysts open, and in-process connections.

DuckDB's delta extension is a download (it fails offline), so each view is pinned to one
Delta snapshot by listing that snapshot's parquet files: ``read_parquet([...files...])``.
Delta keeps partition columns out of the parquet files and in the ``col=value`` folder
names, so the views read them back with ``hive_partitioning`` and the spec's types.
``union_by_name`` lets files written before an additive schema change (a new nullable
column) read as NULL in that column.

The catalog file is replaced atomically (written to a temporary file beside it, then
renamed) under a file lock, so a reader sees either the previous catalog or the new one and
two refreshing processes cannot put an older snapshot back over a newer one.

For an ``s3://`` lake, DuckDB needs its httpfs extension (a download) to read the files, so
the file-based views cannot be built offline; in-process connections instead register each
snapshot as an Arrow dataset read through delta-rs' own object store.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from lake_schemas.errors import NotReadOnly


@dataclass(frozen=True)
class ViewSource:
    """One table as a view: its name, schema, partition columns and pinned snapshot."""

    name: str
    """``<schema>.<view>``, e.g. ``silver.audio_events``."""
    schema: pa.Schema
    partition_by: tuple[str, ...]
    files: tuple[str, ...]
    """Absolute paths (local lake) or URIs of the snapshot's data files."""
    version: int | None
    """The Delta version the view is pinned to; None for a table not created yet."""
    dataset: pads.Dataset | None = None
    """For in-process use on an object store: the snapshot as an Arrow dataset."""
    union_by_name: bool = False
    """The files do not all have the same columns (written before and after an additive
    schema change): read them by name, NULL where a file lacks a column. Costs a read of
    every file's footer per query, so it is only on when needed."""
    absent_columns: tuple[str, ...] = ()
    """Columns of the schema that no file has yet (added, not written): NULL in the view."""


STATS_INDEXED_COLUMNS = 32
"""Delta's default ``delta.dataSkippingNumIndexedCols``: columns past it have no statistics."""
_STATS_CONFIG_KEYS = ("delta.dataSkippingNumIndexedCols", "delta.dataSkippingStatsColumns")
FOOTER_CACHE_FILES = 200_000
"""Parquet footers remembered per process (a data file never changes, so its columns don't)."""

ColumnsOf = Callable[[str], frozenset[str]]
"""The column names a data file holds (read from its Parquet footer)."""


@lru_cache(maxsize=FOOTER_CACHE_FILES)
def parquet_columns(path: str) -> frozenset[str]:
    """Top-level columns of a local Parquet file, from its footer (about 0.1 ms a file)."""
    return frozenset(pq.read_schema(path).names)


def file_layout(
    actions: pa.Table,
    schema: pa.Schema,
    partition_by: Sequence[str],
    configuration: Mapping[str, str | None],
    files: Sequence[str] = (),
    columns_of: ColumnsOf | None = None,
) -> tuple[bool, tuple[str, ...]]:
    """From a snapshot's add actions: do files differ in columns, and which no file has.

    delta-rs writes a null count for every primitive column of every file *it keeps
    statistics for*, so a file with no null count for such a column does not have it. Binary
    and nested columns (``pcm``, ``features``) never get statistics, and neither do columns
    past the indexed ones or under custom statistics settings: for those, statistics say
    nothing, and the files' own footers (``columns_of`` over ``files``) decide. Without a way
    to read footers the answer is the safe one: read by name.
    """
    if actions.num_rows == 0:
        return False, ()
    data_columns = [f.name for f in schema if f.name not in partition_by]
    trusted = not (
        len(schema) > STATS_INDEXED_COLUMNS
        or any(configuration.get(key) for key in _STATS_CONFIG_KEYS)
        or actions.column("num_records").null_count
    )
    unknown: list[str] = []
    present: dict[str, int] = {}
    for name in data_columns:
        key = f"null_count.{name}"
        seen = (
            actions.num_rows - actions.column(key).null_count
            if trusted and key in actions.column_names
            else 0
        )
        if seen and not pa.types.is_nested(schema.field(name).type):
            present[name] = seen
        else:
            unknown.append(name)
    total = actions.num_rows
    if unknown:
        if columns_of is None or len(files) != total:
            return True, ()
        held = [columns_of(path) for path in files]
        present.update({name: sum(name in cols for cols in held) for name in unknown})
    absent = tuple(name for name in data_columns if present[name] == 0)
    return any(0 < count < total for count in present.values()), absent


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(name: str) -> str:
    schema, _, view = name.partition(".")
    return f"{_quote_ident(schema)}.{_quote_ident(view)}"


_TYPE_NAMES: dict[bytes, dict[str, str]] = {}
_PROBE: dict[int, duckdb.DuckDBPyConnection] = {}
"""The probe connection, by process id: a forked child opens its own (and leaves the
parent's copy alone: closing it in the child could disturb the parent's database)."""
_PROBE_LOCK = threading.Lock()


def _duckdb_types(schema: pa.Schema) -> dict[str, str]:
    """DuckDB's own names for the Arrow types of a schema (asked of DuckDB once per schema,
    not guessed), on one in-memory connection kept for the process: opening a connection
    costs ~30 ms, which a catalog file naming a dozen schemas would pay a dozen times."""
    key = schema.serialize().to_pybytes()
    if key not in _TYPE_NAMES:
        with _PROBE_LOCK:
            pid = os.getpid()
            if pid not in _PROBE:
                _PROBE[pid] = duckdb.connect()
            probe = _PROBE[pid]
            handle = f"probe_{uuid.uuid4().hex}"
            probe.register(handle, schema.empty_table())
            try:
                rows = probe.execute(f"DESCRIBE {handle}").fetchall()
            finally:
                probe.unregister(handle)
        _TYPE_NAMES[key] = {str(row[0]): str(row[1]) for row in rows}
    return _TYPE_NAMES[key]


def _parquet_view_sql(source: ViewSource) -> str:
    types = _duckdb_types(source.schema)
    files = ", ".join(_quote_literal(f) for f in source.files)
    options = [f"union_by_name = {str(source.union_by_name).lower()}"]
    if source.partition_by:
        hive_types = ", ".join(f"{_quote_literal(c)}: {types[c]}" for c in source.partition_by)
        options += ["hive_partitioning = true", f"hive_types = {{{hive_types}}}"]
    else:
        options.append("hive_partitioning = false")
    columns = ", ".join(
        f"CAST(NULL AS {types[f.name]}) AS {_quote_ident(f.name)}"
        if f.name in source.absent_columns
        else _quote_ident(f.name)
        for f in source.schema
    )
    return f"SELECT {columns} FROM read_parquet([{files}], {', '.join(options)})"


def _empty_view_sql(schema: pa.Schema) -> str:
    """Zero rows with the table's column names and types (a table not written yet)."""
    types = _duckdb_types(schema)
    if not len(schema):
        return "SELECT NULL AS no_columns LIMIT 0"
    columns = ", ".join(f"CAST(NULL AS {types[f.name]}) AS {_quote_ident(f.name)}" for f in schema)
    return f"SELECT {columns} LIMIT 0"


def define_view(con: duckdb.DuckDBPyConnection, source: ViewSource) -> None:
    """Create the schema and the view (zero rows for a table not created yet)."""
    schema_name = source.name.partition(".")[0]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(schema_name)}")
    target = qualified(source.name)
    if source.dataset is not None:
        handle = f"__arrow_{uuid.uuid4().hex}"
        con.register(handle, source.dataset)
        con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT * FROM {handle}")
    elif source.files:
        con.execute(f"CREATE OR REPLACE VIEW {target} AS {_parquet_view_sql(source)}")
    else:
        con.execute(f"CREATE OR REPLACE VIEW {target} AS {_empty_view_sql(source.schema)}")


META_SCHEMA = "meta"
"""SQL schema of the metadata catalog's views. Not ``catalog``: DuckDB names a database after
its file, so in ``catalog.duckdb`` a schema called ``catalog`` would be ambiguous."""

META_VIEWS: dict[str, str] = {
    "meta.table_versions": (
        "SELECT * EXCLUDE (recorded_at) FROM (SELECT DISTINCT ON (table_name, version) * "
        "FROM meta.table_versions_log ORDER BY table_name, version, recorded_at)"
    ),
    "meta.tables": (
        "SELECT table_name, layer, version, rows, files, location, writer, operation, "
        "committed_at, app_id, app_version, code_version FROM (SELECT DISTINCT ON (table_name) "
        "* FROM meta.table_versions ORDER BY table_name, version DESC)"
    ),
    "meta.quality_checks": "SELECT * FROM meta.quality_checks_log",
    "meta.latest_quality": (
        "SELECT DISTINCT ON (table_name, check_name) * FROM meta.quality_checks_log "
        "ORDER BY table_name, check_name, checked_at DESC"
    ),
}
"""Views over the catalog's logs (one row per version, per check), defined after the logs."""


def define_all(con: duckdb.DuckDBPyConnection, sources: Sequence[ViewSource]) -> None:
    """Every table view, then the catalog's derived views when its logs are among them."""
    names = {s.name for s in sources}
    for source in sources:
        define_view(con, source)
    if {"meta.table_versions_log", "meta.quality_checks_log"} <= names:
        for name, sql in META_VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {qualified(name)} AS {sql}")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_catalog_file(path: Path, collect: Callable[[], Sequence[ViewSource]]) -> Path:
    """Rebuild the DuckDB catalog file atomically from freshly collected snapshots.

    ``collect`` runs inside the lock, so whichever process renames last also read the
    tables last: the file never goes back to an older snapshot.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".lock")):
        sources = collect()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            con = duckdb.connect(str(tmp))
            try:
                con.execute("BEGIN TRANSACTION")  # one commit for all views: ~10x faster
                define_all(con, sources)
                con.execute("COMMIT")
            finally:
                con.close()
            stale_wal = path.with_name(path.name + ".wal")
            if stale_wal.exists():
                stale_wal.unlink()  # a WAL left by a read-write reader would corrupt the new file
            os.replace(tmp, path)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                if leftover.exists():
                    leftover.unlink()
    return path


def connect_in_memory(sources: Sequence[ViewSource]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every source defined (time travel, remote lakes)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    define_all(con, sources)
    return con


READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT})
"""What analyst SQL may be: a query (``SELECT``, ``FROM …``, ``WITH``, ``VALUES``, ``DESCRIBE``,
``SHOW``, ``SUMMARIZE`` all parse to it), or ``EXPLAIN [ANALYZE]`` of one."""
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", re.IGNORECASE)


def read_only_statement(query: str) -> str:
    """The one read statement ``query`` holds, as DuckDB's own parser splits and types it.

    Raises :class:`NotReadOnly` (naming what was found) for no statement, several, or one that
    is not a read (``COPY``, ``ATTACH``, ``CREATE``, ``SET``, ``PRAGMA``, ``INSTALL`` …), and
    DuckDB's own ``ParserException`` for a syntax error.
    """
    statements = duckdb.extract_statements(query)
    if len(statements) != 1:
        raise NotReadOnly(
            f"give exactly one SQL statement (found {len(statements)}); run each query on its own"
        )
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        inner = duckdb.extract_statements(_EXPLAIN.sub("", statement.query, count=1))
        kind = inner[0].type if len(inner) == 1 else kind
        if kind in READ_STATEMENTS:
            return statement.query
    if kind not in READ_STATEMENTS:
        name = str(kind).rsplit(".", 1)[-1]
        raise NotReadOnly(
            f"analyst SQL is read-only: a {name} statement is not allowed; "
            "use one SELECT (or EXPLAIN SELECT) over the lake's tables"
        )
    return statement.query


def lock_read_only(con: duckdb.DuckDBPyConnection, sources: Sequence[ViewSource]) -> None:
    """Turn external access off except for the views' snapshot files, then lock the settings.

    After this the connection cannot read or write any other file (``read_csv('/etc/passwd')``,
    ``COPY … TO``, ``ATTACH``), load or install an extension, scan Python objects, or change a
    setting (``SET`` fails with "the configuration has been locked").
    """
    files = sorted({path for source in sources for path in source.files})
    listed = ", ".join(_quote_literal(path) for path in files)
    con.execute(f"SET allowed_paths = [{listed}]")
    con.execute("SET python_enable_replacements = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
