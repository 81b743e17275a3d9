"""Schema enforcement (refused batches leave the table untouched) and additive evolution."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pytest

from lake_schemas import AUDIO_EVENTS, Lake, SchemaMismatch


def _replace(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, array)


BAD_BATCHES = {
    "missing": (lambda t: t.drop_columns(["snr_db"]), {"snr_db": "missing"}),
    "unexpected": (
        lambda t: t.append_column("mood", pa.array(["calm"] * t.num_rows)),
        {"mood": "unexpected"},
    ),
    "wrong-type": (
        lambda t: _replace(t, "first_seq", pa.array(range(t.num_rows), pa.int32())),
        {"first_seq": "wrong type int32"},
    ),
    "nulls-in-not-null": (
        lambda t: _replace(t, "device_id", pa.array([None] * t.num_rows, pa.string())),
        {"device_id": "null value"},
    ),
    "several": (
        lambda t: t.drop_columns(["rms_dbfs", "score"]).append_column(
            "extra", pa.array([1] * t.num_rows)
        ),
        {"rms_dbfs": "missing", "score": "missing", "extra": "unexpected"},
    ),
}


def _assert_refused_untouched(lake: Lake, make_events, case: str) -> None:
    lake.append(AUDIO_EVENTS, make_events(4), writer="w")
    version_before = lake.version(AUDIO_EVENTS)
    mutate, expected = BAD_BATCHES[case]
    with pytest.raises(SchemaMismatch) as refused:
        lake.append(
            AUDIO_EVENTS, mutate(make_events(3, start=10)), writer="w", app_id="a", app_version=1
        )
    assert refused.value.columns == sorted(expected)
    for column, words in expected.items():
        assert words in refused.value.problems[column]
        assert column in str(refused.value)
    assert lake.version(AUDIO_EVENTS) == version_before
    assert lake.read(AUDIO_EVENTS).num_rows == 4
    assert lake.transaction_version(AUDIO_EVENTS, "a") is None


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_mismatched_batch_is_refused_and_table_untouched(
    local_lake: Lake, make_events, case: str
) -> None:
    _assert_refused_untouched(local_lake, make_events, case)


def test_mismatch_refused_on_every_storage(lake: Lake, make_events) -> None:
    _assert_refused_untouched(lake, make_events, "several")


@pytest.mark.parametrize("operation", ["merge_insert", "upsert"])
def test_merges_enforce_the_schema_too(local_lake: Lake, make_events, operation: str) -> None:
    with pytest.raises(SchemaMismatch):
        getattr(local_lake, operation)(
            AUDIO_EVENTS, make_events(2).drop_columns(["label"]), writer="w"
        )
    assert not local_lake.exists(AUDIO_EVENTS)  # not even created


def test_harmless_differences_are_accepted(local_lake: Lake, make_events) -> None:
    batch = make_events(3)
    reordered = batch.select(list(reversed(batch.column_names)))
    large = _replace(reordered, "event_id", batch.column("event_id").cast(pa.large_string()))
    all_null = _replace(large, "label", pa.array([None] * 3))  # type null, column nullable
    assert all_null.schema.field("label").type == pa.null()
    local_lake.append(AUDIO_EVENTS, all_null, writer="w")
    stored = local_lake.read(AUDIO_EVENTS)
    assert stored.schema == AUDIO_EVENTS.schema
    assert sorted(stored.column("event_id").to_pylist()) == batch.column("event_id").to_pylist()


def test_additive_nullable_column_evolves_the_table_and_is_recorded(
    lake: Lake, make_events
) -> None:
    lake.append(AUDIO_EVENTS, make_events(3), writer="sidecar-v1")
    evolved = dataclasses.replace(
        AUDIO_EVENTS,
        schema=AUDIO_EVENTS.schema.append(pa.field("room", pa.string(), nullable=True)),
    )
    batch = make_events(2, start=3).append_column("room", pa.array(["kitchen", None]))
    lake.append(evolved, batch, writer="sidecar-v2")
    table = lake.read(evolved).sort_by("event_id")
    assert table.column("room").to_pylist() == [None, None, None, "kitchen", None]
    history = lake.catalog.schema_history(AUDIO_EVENTS.name)
    assert len(history) == 2
    assert "room" not in history[0].columns and history[1].columns[-1] == "room"
    assert json.loads(history[1].schema_json)["fields"][-1]["nullable"] is True
    # The old spec no longer describes the table: its writers are told to upgrade.
    with pytest.raises(SchemaMismatch, match="room"):
        lake.append(AUDIO_EVENTS, make_events(1, start=9), writer="sidecar-v1")


def test_new_not_null_column_is_refused_on_an_existing_table(local_lake: Lake, make_events) -> None:
    local_lake.append(AUDIO_EVENTS, make_events(2), writer="w")
    evolved = dataclasses.replace(
        AUDIO_EVENTS,
        schema=AUDIO_EVENTS.schema.append(pa.field("room", pa.string(), nullable=False)),
    )
    with pytest.raises(SchemaMismatch, match="must be nullable"):
        local_lake.append(
            evolved, make_events(1).append_column("room", pa.array(["x"])), writer="w"
        )
    assert local_lake.read(AUDIO_EVENTS).num_rows == 2
