"""Every column of every table reads back through SQL exactly as the Delta table holds it.

The reference is the Delta table itself (delta-rs' own reader, independent of the DuckDB
views); both SQL paths are checked: the catalog file any DuckDB client opens, and the
in-process connection ``sonolake sql`` uses. Rows are generated from each spec's Arrow schema,
with values in every column (binary and nested ones included) and NULLs in the nullable ones.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lake_schemas import ALL_TABLES, Lake, TableSpec
from lake_schemas.catalog import CATALOG_TABLES

ROWS = 6
DAY_0 = date(2024, 3, 1)


def _value(dtype: pa.DataType, column: str, i: int) -> Any:
    if pa.types.is_string(dtype):
        return f"{column}-{i}"
    if pa.types.is_binary(dtype):
        return bytes([i, 0, 255, i]) * (i + 1)
    if pa.types.is_integer(dtype):
        return i
    if pa.types.is_floating(dtype):
        return i + 0.25
    if pa.types.is_boolean(dtype):
        return i % 2 == 0
    if pa.types.is_date(dtype):
        return DAY_0 + timedelta(days=i % 2)  # two partitions
    if pa.types.is_timestamp(dtype):
        return datetime(2024, 3, 1, tzinfo=UTC) + timedelta(seconds=i, microseconds=i)
    if pa.types.is_struct(dtype):
        return {f.name: _value(f.type, f.name, i) for f in dtype}
    if pa.types.is_list(dtype):
        return [_value(dtype.value_type, column, i + k) for k in range(3)]
    raise AssertionError(f"no generator for {dtype} ({column})")


def rows_for(spec: TableSpec, n: int = ROWS) -> pa.Table:
    """``n`` rows matching the spec; nullable columns are NULL in every third row."""
    columns = {
        f.name: [None if f.nullable and i % 3 == 2 else _value(f.type, f.name, i) for i in range(n)]
        for f in spec.schema
    }
    return pa.Table.from_pydict(columns, schema=spec.schema)


def _sorted_rows(table: pa.Table, names: list[str]) -> list[dict[str, Any]]:
    rows = table.select(names).to_pylist()
    return sorted(rows, key=lambda row: repr([row[name] for name in names]))


def _assert_same(name: str, delta_rows: pa.Table, sql_rows: pa.Table) -> None:
    names = delta_rows.schema.names
    assert sql_rows.schema.names == names, name
    expected, got = _sorted_rows(delta_rows, names), _sorted_rows(sql_rows, names)
    assert len(got) == len(expected), name
    for column in names:
        assert [r[column] for r in got] == [r[column] for r in expected], f"{name}.{column}"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Every table, each in two commits (two files per partition); one lake for the module."""
    lake = Lake(tmp_path_factory.mktemp("columns") / "lakehouse")
    with lake.batch():
        for spec in ALL_TABLES:
            lake.append(spec, rows_for(spec), writer="test")
            lake.append(spec, rows_for(spec).slice(0, 2), writer="test")
        lake.catalog.record_quality(ALL_TABLES[0].name, "rows", True, {"rows": ROWS})
    return lake


def _delta(lake: Lake, name: str) -> pa.Table:
    if name.startswith("meta."):
        spec = next(s for s in CATALOG_TABLES if name == s.name + "_log")
        return DeltaTable(lake.catalog.uri(spec)).to_pyarrow_table()
    return DeltaTable(lake.uri_of(name)).to_pyarrow_table()


def _names(lake: Lake) -> list[str]:
    return [source.name for source in lake.view_sources()]


def test_every_table_has_every_column_through_the_catalog_file(written: Lake) -> None:
    names = _names(written)
    assert {spec.name for spec in ALL_TABLES} | {"meta.table_versions_log"} <= set(names)
    written.refresh_sql_catalog()
    assert written.catalog_file is not None
    con = duckdb.connect(str(written.catalog_file), read_only=True)
    try:
        for name in names:
            sql = con.sql(f"SELECT * FROM {name}").to_arrow_table()
            _assert_same(name, _delta(written, name), sql)
    finally:
        con.close()


def test_every_table_has_every_column_in_process(written: Lake) -> None:
    con = written.connect_sql()
    try:
        for name in _names(written):
            sql = con.sql(f"SELECT * FROM {name}").to_arrow_table()
            _assert_same(name, _delta(written, name), sql)
    finally:
        con.close()


def test_binary_audio_is_counted_as_written(written: Lake) -> None:
    """The analyst's first check: every raw payload is there (binary columns have no stats)."""
    con = written.connect_sql()
    n = ROWS + 2
    assert con.execute("SELECT count(pcm) FROM bronze.audio_chunks").fetchone() == (n,)
    assert con.execute("SELECT sum(octet_length(pcm)) FROM bronze.audio_chunks").fetchone() == (
        sum(len(_value(pa.binary(), "pcm", i)) for i in [*range(ROWS), 0, 1]),
    )
    con.close()
