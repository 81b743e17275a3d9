"""`sonolake catalog` and `sonolake sql`: the analyst's view of the lake.

Both read the lake named by the settings (``SONOLAKE_LAKE_URI``), local or ``s3://``. ``sql``
runs in an in-process DuckDB whose views are pinned to fresh Delta snapshots (or to the
versions asked for), so it needs no catalog file and works the same on an object store.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import get_settings

if TYPE_CHECKING:  # the lake's imports (pyarrow datasets, duckdb) load when a command runs
    import pyarrow as pa

    from lake_schemas import Lake


class CatalogFormat(StrEnum):
    table = "table"
    json = "json"


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


PIPE_WIDTH_CHARS = 200
"""Table width when stdout is not a terminal (Rich would otherwise truncate at 80)."""


def _console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH_CHARS)


def _lake() -> Lake:
    from sonolake import wiring

    return wiring.lake(get_settings())


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def catalog_rows(lake: Lake) -> list[dict[str, Any]]:
    """One row per table SQL knows: recorded state from the metadata catalog, or 'not created'."""
    recorded = {entry.name: entry for entry in lake.catalog.tables()}
    rows = []
    for name in sorted(set(lake.table_names()) | set(recorded)):
        entry = recorded.get(name)
        rows.append(
            {
                "table": name,
                "layer": name.partition(".")[0],
                "rows": entry.rows if entry else None,
                "version": entry.version if entry else None,
                "location": entry.location if entry else lake.uri_of(name),
                "last_writer": entry.writer if entry else None,
                "last_operation": entry.operation if entry else None,
                "committed_at": entry.committed_at if entry else None,
                "created": entry is not None,
            }
        )
    return rows


def show_catalog(
    format: Annotated[
        CatalogFormat, typer.Option("--format", "-f", help="table (for people) or json")
    ] = CatalogFormat.table,
) -> None:
    """List the lake's tables: layer, rows, Delta version, location and last writer."""
    lake = _lake()
    rows = catalog_rows(lake)
    if format is CatalogFormat.json:
        typer.echo(json.dumps(_jsonable(rows), indent=2))
        return
    table = Table(title=f"lake: {lake.root}")
    for column in (
        "table",
        "layer",
        "rows",
        "version",
        "last writer",
        "committed (UTC)",
        "location",
    ):
        table.add_column(column, justify="right" if column in ("rows", "version") else "left")
    for row in rows:
        committed = row["committed_at"]
        table.add_row(
            row["table"],
            row["layer"],
            "-" if row["rows"] is None else f"{row['rows']:,}",
            "not created" if row["version"] is None else str(row["version"]),
            row["last_writer"] or "-",
            committed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if committed else "-",
            row["location"],
        )
    console = _console()
    console.print(table)
    if lake.catalog_file is not None and not lake.is_remote:
        console.print(f"DuckDB catalog file: {lake.catalog_file}")
    elif lake.is_remote:
        console.print(
            "object-store lake: no DuckDB catalog file (DuckDB needs httpfs for s3); "
            "query with `sonolake sql`"
        )


AS_OF_VERSION_HELP = (
    "Time travel. 'N' pins the one lake table the query names to Delta version N; "
    "'TABLE=N' (e.g. silver.audio_events=3) pins that table, and may be repeated when the "
    "query names several. Tables not named here read their latest version."
)


def _base_tables(node: Any) -> Iterator[tuple[str, str]]:
    """``(schema, table)`` of every table reference in a parsed statement (DuckDB's JSON)."""
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and "table_name" in node:
            yield str(node.get("schema_name") or ""), str(node["table_name"])
        for value in node.values():
            yield from _base_tables(value)
    elif isinstance(node, list):
        for value in node:
            yield from _base_tables(value)


def referenced_tables(query: str, known: set[str]) -> set[str]:
    """Lake tables (``schema.table``) a query names, from DuckDB's own parse tree.

    ``json_serialize_sql`` parses without binding, so ``JOIN … USING``, CTEs and subqueries
    are seen as written (``duckdb.get_table_names`` binds ``USING`` columns and fails on them).
    A query DuckDB cannot parse names nothing; running it reports the syntax error.
    """
    import duckdb

    con = duckdb.connect()
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    finally:
        con.close()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        return set()
    return {f"{s}.{t}" for s, t in _base_tables(tree.get("statements", [])) if f"{s}.{t}" in known}


def parse_as_of_versions(values: list[str], query: str, known: list[str]) -> dict[str, int]:
    """``["3"]`` or ``["silver.audio_events=3", ...]`` → ``{table: version}``."""
    pinned: dict[str, int] = {}
    for value in values:
        table, sep, number = value.rpartition("=")
        if not sep:
            table, number = "", value
        try:
            version = int(number)
        except ValueError:
            raise BadInput(
                f"--as-of-version {value!r}: use N or TABLE=N with an integer version"
            ) from None
        if version < 0:
            raise BadInput(f"--as-of-version {value!r}: versions start at 0")
        if not table:
            referenced = referenced_tables(query, set(known))
            if len(referenced) != 1:
                named = ", ".join(sorted(referenced)) or "no lake table"
                raise BadInput(
                    f"--as-of-version {value} is ambiguous: the query names {named}; "
                    "use --as-of-version TABLE=N (repeat it for each table)"
                )
            table = referenced.pop()
        if table not in known:
            raise BadInput(f"--as-of-version: unknown table {table!r}; known: {', '.join(known)}")
        pinned[table] = version
    return pinned


def _write_result(result: pa.Table, format: SqlFormat) -> None:
    if format is SqlFormat.json:
        typer.echo(json.dumps(_jsonable(result.to_pylist()), indent=2))
        return
    if format is SqlFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.column_names)
        for row in result.to_pylist():
            writer.writerow([_jsonable(v) if v is not None else "" for v in row.values()])
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
        return
    table = Table(*result.column_names)
    for row in result.to_pylist():
        table.add_row(*("NULL" if v is None else str(_jsonable(v)) for v in row.values()))
    console = _console()
    console.print(table)
    console.print(f"{result.num_rows} row(s)")


def run_sql(
    query: Annotated[
        str, typer.Argument(help="SQL over the lake, e.g. SELECT … FROM silver.audio_events")
    ],
    format: Annotated[
        SqlFormat, typer.Option("--format", "-f", help="table, csv or json")
    ] = SqlFormat.table,
    as_of_version: Annotated[
        list[str] | None, typer.Option("--as-of-version", help=AS_OF_VERSION_HELP)
    ] = None,
    as_of_time: Annotated[
        datetime | None,
        typer.Option(
            "--as-of-time",
            help="Time travel every table to its latest version at this time "
            "(ISO 8601, UTC when no offset); tables created later read as empty.",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        ),
    ] = None,
) -> None:
    """Run one read-only SQL query over the lake's tables (schemas: bronze, silver, gold,
    monitoring, meta).

    Exactly one SELECT (or EXPLAIN SELECT); the query can read the tables' snapshot files and
    nothing else, and cannot change a setting. Anything else, bad SQL, an unknown table or a
    version the table does not have exits with code 2 and says why.
    """
    import duckdb
    import pyarrow as pa

    from lake_schemas import NotReadOnly, TableNotFound, VersionNotFound
    from lake_schemas.sql_catalog import read_only_statement

    try:
        statement = read_only_statement(query)
    except NotReadOnly as exc:
        raise BadInput(str(exc)) from None
    except duckdb.Error as exc:
        raise BadInput(str(exc)) from None
    lake = _lake()
    known = lake.table_names()
    versions = parse_as_of_versions(list(as_of_version or []), statement, known)
    if versions and as_of_time is not None:
        raise BadInput("use --as-of-version or --as-of-time, not both")
    try:
        con = lake.connect_sql(versions, as_of_time, read_only=True)
    except (VersionNotFound, TableNotFound) as exc:
        raise BadInput(str(exc)) from None
    try:
        relation = con.sql(statement)
        result = relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.CatalogException as exc:
        raise BadInput(f"{exc}\nknown tables: {', '.join(known)}") from None
    except duckdb.PermissionException as exc:
        raise BadInput(
            f"{exc}\nanalyst SQL reads only the lake's tables (no other files, no settings)"
        ) from None
    except (duckdb.IOException, duckdb.InternalException) as exc:
        raise WorkFailed(str(exc)) from None
    except duckdb.Error as exc:
        raise BadInput(str(exc)) from None
    finally:
        con.close()
    _write_result(result, format)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("catalog")(show_catalog)
    app.command("sql")(run_sql)
