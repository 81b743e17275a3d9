"""merge_insert (insert-if-absent on the primary key) and upsert."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
from sessions_table import session_rows

from lake_schemas import AUDIO_EVENTS, DEAD_LETTERS, SESSIONS, Lake


def test_merge_insert_deduplicates_on_primary_key(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(10), writer="w")
    overlapping = make_events(10, start=5)  # ev-5..ev-14: 5 known, 5 new
    doubled = pa.concat_tables([overlapping, overlapping])  # and each twice in the batch
    result = lake.merge_insert(AUDIO_EVENTS, doubled, writer="w")
    assert result.rows == 5
    ids = lake.read(AUDIO_EVENTS, columns=["event_id"]).column("event_id").to_pylist()
    assert sorted(ids) == [f"ev-{i:06d}" for i in range(15)]
    again = lake.merge_insert(AUDIO_EVENTS, overlapping, writer="w")
    assert again.rows == 0
    assert lake.read(AUDIO_EVENTS).num_rows == 15


def test_merge_insert_with_nothing_new_still_records_app_transaction(
    lake: Lake, make_events
) -> None:
    lake.merge_insert(AUDIO_EVENTS, make_events(4), writer="w", app_id="m", app_version=1)
    replayed_elsewhere = lake.merge_insert(
        AUDIO_EVENTS, make_events(4), writer="w", app_id="m", app_version=2
    )
    assert replayed_elsewhere.rows == 0 and not replayed_elsewhere.skipped
    assert lake.transaction_version(AUDIO_EVENTS, "m") == 2
    assert lake.merge_insert(
        AUDIO_EVENTS, make_events(4), writer="w", app_id="m", app_version=2
    ).skipped
    assert lake.read(AUDIO_EVENTS).num_rows == 4


def test_upsert_updates_existing_keys_and_inserts_new_ones(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(6), writer="w")
    changed = make_events(4, start=4)  # ev-4, ev-5 exist; ev-6, ev-7 are new
    changed = changed.set_column(
        changed.schema.get_field_index("predicted_label"), "predicted_label", pa.array(["stop"] * 4)
    )
    result = lake.upsert(AUDIO_EVENTS, changed, writer="relabel")
    assert result.rows == 4
    table = lake.read(AUDIO_EVENTS).sort_by("event_id")
    assert table.num_rows == 8
    labels = dict(
        zip(
            table.column("event_id").to_pylist(),
            table.column("predicted_label").to_pylist(),
            strict=True,
        )
    )
    assert [labels[f"ev-{i:06d}"] for i in range(4, 8)] == ["stop"] * 4
    assert labels["ev-000000"] != "stop"


def test_upsert_keeps_the_last_row_of_a_key_in_the_batch(local_lake: Lake, make_events) -> None:
    first, second = make_events(1), make_events(1)
    second = second.set_column(second.schema.get_field_index("score"), "score", pa.array([0.1]))
    local_lake.upsert(AUDIO_EVENTS, pa.concat_tables([first, second]), writer="w")
    assert local_lake.read(AUDIO_EVENTS).column("score").to_pylist() == [0.1]


def test_nullable_key_columns_match_null_to_null(local_lake: Lake) -> None:
    """dead_letters' key (source, record_index) allows a NULL index: it must still dedupe."""
    now = datetime(2024, 3, 1, tzinfo=UTC)
    rows = pa.table(
        {
            "source": ["seg-1", "seg-1"],
            "record_index": pa.array([None, 3], pa.int64()),
            "session_id": [None, "s"],
            "seq": pa.array([None, 3], pa.int64()),
            "reason": ["truncated segment", "bad encoding"],
            "quarantined_at": [now, now],
            "payload": pa.array([None, b"\x00"], pa.binary()),
            "ingest_date": [now.date(), now.date()],
        }
    )
    local_lake.merge_insert(DEAD_LETTERS, rows, writer="sidecar")
    local_lake.merge_insert(DEAD_LETTERS, rows, writer="sidecar")
    stored = local_lake.read(DEAD_LETTERS)
    assert stored.num_rows == 2
    assert pc.sum(pc.is_null(stored.column("record_index"))).as_py() == 1


def test_filtered_reads_work_after_a_merge(local_lake: Lake, make_events) -> None:
    """Merged files carry string_view statistics that pyarrow cannot compare with a string."""
    local_lake.append(AUDIO_EVENTS, make_events(10, days=2), writer="w")
    local_lake.upsert(AUDIO_EVENTS, make_events(4, start=8, days=2), writer="w")
    wanted = pc.field("event_id").isin(["ev-000001", "ev-000009", "ev-000011"])
    rows = local_lake.read(AUDIO_EVENTS, columns=["event_id"], filter=wanted)
    assert sorted(rows.column("event_id").to_pylist()) == ["ev-000001", "ev-000009", "ev-000011"]
    one = local_lake.read(AUDIO_EVENTS, filter=[("event_id", "=", "ev-000003")])
    assert one.num_rows == 1 and one.schema == AUDIO_EVENTS.schema


def test_an_upsert_within_partitions_rewrites_only_those(lake: Lake) -> None:
    old, today = date(2026, 11, 1), date(2026, 12, 4)
    lake.append(SESSIONS, session_rows(["a", "b"], old), writer="w")
    lake.append(SESSIONS, session_rows(["c"], today), writer="w")
    old_files = [f for f in lake.dataset(SESSIONS).files if "2026-11-01" in f]
    update = pa.concat_tables(
        [session_rows(["c"], today, chunks=5), session_rows(["d"], today, chunks=2)]
    )
    result = lake.upsert(SESSIONS, update, writer="w", within=[today.isoformat()])
    assert result.rows == 2
    rows = {r["session_id"]: r["chunks"] for r in lake.read(SESSIONS).to_pylist()}
    assert rows == {"a": 1, "b": 1, "c": 5, "d": 2}
    assert [f for f in lake.dataset(SESSIONS).files if "2026-11-01" in f] == old_files
    merge = lake.history(SESSIONS)[0]["operationMetrics"]
    assert merge["num_target_files_scanned"] == 1, "the other partition's file is not read"
    assert merge["num_target_files_skipped_during_scan"] == len(old_files)
