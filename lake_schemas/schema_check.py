"""Schema enforcement: a batch must match its table's spec before anything is written.

Delta would accept many batches we do not want (a column dropped, an int32 where an int64
belongs, nulls in a key), so the check is ours and runs before any file is written: a
refused batch leaves the table exactly as it was. Two differences are harmless and accepted:
column order (the batch is reordered to the spec) and Arrow's "large" and "view" variants
of string/binary/list (cast to the spec's type). The only schema change allowed on an
existing table is additive: a new NULLABLE column that is in the spec but not yet in the table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from lake_schemas.errors import SchemaMismatch
from lake_schemas.tables import TableSpec

_UTC_NAMES = {"UTC", "utc", "+00:00", "Z", "Etc/UTC"}


def _normalized(dtype: pa.DataType) -> pa.DataType:
    """The type with representation-only differences removed, for comparison."""
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return pa.binary()
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype):
        return pa.list_(_normalized(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _normalized(f.type)) for f in dtype])
    if pa.types.is_timestamp(dtype) and dtype.tz in _UTC_NAMES:
        return pa.timestamp(dtype.unit, tz="UTC")
    return dtype


def same_type(left: pa.DataType, right: pa.DataType) -> bool:
    """True when the two types hold the same values (ignoring large/view variants)."""
    return _normalized(left) == _normalized(right)


def _describe(field: pa.Field) -> str:
    return f"{field.type}{'' if field.nullable else ' NOT NULL'}"


@dataclass(frozen=True)
class Conformed:
    """A batch that matches the spec, and the columns the table must gain to take it."""

    data: pa.Table
    new_columns: tuple[pa.Field, ...]


def batch_problems(spec: TableSpec, data: pa.Table) -> dict[str, str]:
    """What is wrong with the batch against the spec, per column (empty when it matches)."""
    expected = spec.schema
    problems: dict[str, str] = {}
    for name, count in Counter(data.schema.names).items():
        if count > 1:
            problems[name] = f"appears {count} times in the batch"
    for field in expected:
        if field.name not in data.schema.names:
            problems[field.name] = f"missing (expected {_describe(field)})"
    for name in data.schema.names:
        if expected.get_field_index(name) < 0:
            problems[name] = "unexpected column (not in the spec; add it there first)"
    for field in expected:
        if field.name in problems or field.name not in data.schema.names:
            continue
        got = data.schema.field(field.name).type
        if pa.types.is_null(got) and field.nullable:
            continue  # an all-null column of a nullable field: cast to the spec's type
        if not same_type(got, field.type):
            problems[field.name] = f"wrong type {got} (expected {field.type})"
            continue
        nulls = data.column(field.name).null_count
        if not field.nullable and nulls:
            problems[field.name] = f"{nulls} null value(s) in a NOT NULL column"
    return problems


def evolution_problems(
    spec: TableSpec, table_schema: pa.Schema
) -> tuple[dict[str, str], tuple[pa.Field, ...]]:
    """Compare the spec with the table as stored: problems, and the columns to add.

    Columns are never dropped or retyped; a column the spec adds must be nullable, because
    the rows already in the table have no value for it.
    """
    problems: dict[str, str] = {}
    new_columns: list[pa.Field] = []
    for field in table_schema:
        if spec.schema.get_field_index(field.name) < 0:
            problems[field.name] = (
                "the table has this column but the spec does not (columns are never dropped; "
                "use the current spec)"
            )
    for field in spec.schema:
        index = table_schema.get_field_index(field.name)
        if index < 0:
            if field.nullable:
                new_columns.append(field)
            else:
                problems[field.name] = (
                    "new column must be nullable to be added to an existing table"
                )
            continue
        stored = table_schema.field(index)
        if not same_type(stored.type, field.type):
            problems[field.name] = (
                f"spec type {field.type} differs from the stored type {stored.type} "
                "(only additive, nullable changes are allowed)"
            )
    return problems, tuple(new_columns)


def conform(spec: TableSpec, data: pa.Table, table_schema: pa.Schema | None) -> Conformed:
    """Check the batch (and the spec against the stored table) and cast it to the spec.

    Raises :class:`SchemaMismatch` naming every offending column; nothing is written then.
    """
    problems = batch_problems(spec, data)
    new_columns: tuple[pa.Field, ...] = ()
    if table_schema is not None:
        table_problems, new_columns = evolution_problems(spec, table_schema)
        for column, why in table_problems.items():
            problems.setdefault(column, why)
    if problems:
        raise SchemaMismatch(spec.name, problems)
    ordered = data.select(spec.schema.names)
    return Conformed(data=ordered.cast(spec.schema), new_columns=new_columns)
