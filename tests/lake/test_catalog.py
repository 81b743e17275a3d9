"""The metadata catalog (in the lake) and the DuckDB catalog file (for any DuckDB client)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import date

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, Field, write_deltalake

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, Lake
from lake_schemas.catalog import TABLE_VERSIONS
from lake_schemas.sql_catalog import file_layout


def test_catalog_records_each_version_with_writer_and_rows(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(4), writer="sidecar", app_id="sc", app_version=1)
    lake.merge_insert(AUDIO_EVENTS, make_events(6), writer="backfill")
    versions = lake.catalog.versions(AUDIO_EVENTS.name)
    assert [v.version for v in versions] == [0, 1, 2]
    assert [v.writer for v in versions] == ["sidecar", "sidecar", "backfill"]
    assert [v.rows for v in versions] == [0, 4, 6]
    assert (versions[1].app_id, versions[1].app_version) == ("sc", 1)
    assert versions[2].operation == "MERGE"
    current = lake.catalog.table(AUDIO_EVENTS.name)
    assert current is not None and current.location == lake.uri(AUDIO_EVENTS)
    assert current.layer == "silver" and current.code_version
    # Durable: a new Lake on the same root (another process, later) reads the same catalog.
    reopened = Lake(lake.root, lake.storage_options, lake.catalog_file)
    assert [(t.name, t.version, t.rows) for t in reopened.catalog.tables()] == [
        (AUDIO_EVENTS.name, 2, 6)
    ]


def test_catalog_catches_up_commits_it_missed(local_lake: Lake, make_events) -> None:
    """A commit made outside the Lake (or a crash before the catalog row) is recorded later."""
    local_lake.append(AUDIO_EVENTS, make_events(2), writer="sidecar")
    write_deltalake(local_lake.uri(AUDIO_EVENTS), make_events(3, start=2), mode="append")
    local_lake.append(AUDIO_EVENTS, make_events(1, start=5), writer="sidecar")
    versions = local_lake.catalog.versions(AUDIO_EVENTS.name)
    assert [(v.version, v.rows) for v in versions] == [(0, 0), (1, 2), (2, 5), (3, 6)]
    assert versions[2].writer.startswith("delta-rs")  # no lineage of ours: the engine's name


def test_quality_results_latest_per_check(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(2), writer="w")
    lake.catalog.record_quality(AUDIO_EVENTS.name, "not_null_ids", False, {"null_ids": 3})
    lake.catalog.record_quality(AUDIO_EVENTS.name, "not_null_ids", True, {"null_ids": 0})
    lake.catalog.record_quality(AUDIO_EVENTS.name, "row_count", True, {"rows": 2})
    results = {r.check_name: r for r in lake.catalog.quality(AUDIO_EVENTS.name)}
    assert set(results) == {"not_null_ids", "row_count"}
    assert results["not_null_ids"].passed and results["not_null_ids"].details == {"null_ids": 0}
    assert results["row_count"].table_version == 1
    assert lake.catalog.quality(AUDIO_CHUNKS.name) == []


def test_in_process_sql_sees_partitions_and_catalog(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(9, days=3), writer="w")
    con = lake.connect_sql()
    by_day = con.execute(
        "SELECT event_date, count(*) FROM silver.audio_events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert by_day == [(date(2024, 3, 1), 3), (date(2024, 3, 2), 3), (date(2024, 3, 3), 3)]
    assert con.execute("SELECT count(*) FROM bronze.audio_chunks").fetchone() == (0,)
    assert con.execute("SELECT table_name, version, rows FROM meta.tables").fetchall() == [
        (AUDIO_EVENTS.name, 1, 9)
    ]
    pinned = lake.connect_sql({AUDIO_EVENTS.name: 0})
    assert pinned.execute("SELECT count(*) FROM silver.audio_events").fetchone() == (0,)


def test_object_store_lake_has_no_catalog_file(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(1), writer="w")
    if lake.is_remote:
        assert lake.catalog_file is None and lake.refresh_sql_catalog() is None
    else:
        assert lake.refresh_sql_catalog() == lake.catalog_file


def _analyst(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A separate DuckDB connection to the catalog file, as any analyst's client opens it."""
    assert lake.catalog_file is not None
    return duckdb.connect(str(lake.catalog_file), read_only=True)


def test_catalog_file_serves_a_separate_duckdb_connection(local_lake: Lake, make_events) -> None:
    local_lake.append(AUDIO_EVENTS, make_events(12, days=2), writer="sidecar")
    local_lake.catalog.record_quality(AUDIO_EVENTS.name, "freshness", True, {})
    con = _analyst(local_lake)
    rows = con.execute(
        "SELECT event_date, device_id, count(*) FROM silver.audio_events "
        "WHERE event_date = DATE '2024-03-02' GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [(date(2024, 3, 2), f"spk-{d}", 2) for d in range(3)]
    columns = [row[0] for row in con.execute("DESCRIBE silver.audio_events").fetchall()]
    assert columns == AUDIO_EVENTS.schema.names  # partition column included, spec order
    assert con.execute("SELECT count(*) FROM gold.predictions").fetchone() == (0,)
    assert con.execute("SELECT writer, rows FROM meta.tables").fetchall() == [("sidecar", 12)]
    assert con.execute("SELECT check_name, passed FROM meta.latest_quality").fetchall() == [
        ("freshness", True)
    ]
    schemas = {
        row[0]
        for row in con.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    }
    assert {"bronze", "silver", "gold", "monitoring", "meta"} <= schemas
    con.close()


def test_catalog_file_refresh_is_atomic_for_open_readers(local_lake: Lake, make_events) -> None:
    local_lake.append(AUDIO_EVENTS, make_events(5), writer="w")
    reader = _analyst(local_lake)
    assert reader.execute("SELECT count(*) FROM silver.audio_events").fetchone() == (5,)
    local_lake.append(AUDIO_EVENTS, make_events(5, start=5), writer="w")  # replaces the file
    # The open reader keeps its consistent (older) catalog; a new one sees the new snapshot.
    # (In one process DuckDB shares an open database, so the new reader is another process.)
    assert reader.execute("SELECT count(*) FROM silver.audio_events").fetchone() == (5,)
    other_process = subprocess.run(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
            "print(con.execute('SELECT count(*) FROM silver.audio_events').fetchone()[0])",
            str(local_lake.catalog_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert other_process.stdout.strip() == "10"
    reader.close()
    assert local_lake.catalog_file is not None
    leftovers = [
        p.name for p in local_lake.catalog_file.parent.iterdir() if p.name.endswith(".tmp")
    ]
    assert leftovers == []


def test_catalog_file_reads_evolved_schema(local_lake: Lake, make_events) -> None:
    local_lake.append(AUDIO_EVENTS, make_events(2), writer="w")
    evolved = dataclasses.replace(
        AUDIO_EVENTS, schema=AUDIO_EVENTS.schema.append(pa.field("room", pa.string()))
    )
    local_lake.append(
        evolved, make_events(1, start=2).append_column("room", pa.array(["hall"])), writer="w"
    )
    rows = (
        _analyst(local_lake)
        .execute("SELECT event_id, room FROM silver.audio_events ORDER BY event_id")
        .fetchall()
    )
    assert rows == [("ev-000000", None), ("ev-000001", None), ("ev-000002", "hall")]
    assert len(local_lake.catalog.schema_history(AUDIO_EVENTS.name)) == 2
    assert _analyst(local_lake).execute(
        "SELECT count(DISTINCT schema_json) FROM meta.table_versions "
        "WHERE table_name = 'silver.audio_events'"
    ).fetchone() == (2,)


@pytest.mark.parametrize("name", ["table_versions", "quality_checks"])
def test_catalog_tables_are_delta_tables_in_the_lake(
    local_lake: Lake, make_events, name: str
) -> None:
    local_lake.append(AUDIO_EVENTS, make_events(1), writer="w")
    local_lake.catalog.record_quality(AUDIO_EVENTS.name, "c", True, {})
    table = DeltaTable(f"{local_lake.root}/_catalog/{name}")
    assert table.version() >= 1


def test_catalog_file_reads_a_column_no_file_has_yet(local_lake: Lake, make_events) -> None:
    """A column added to the table (e.g. by another tool) but not written yet reads as NULL."""
    local_lake.append(AUDIO_EVENTS, make_events(2), writer="w")
    DeltaTable(local_lake.uri(AUDIO_EVENTS)).alter.add_columns(
        [Field("room", "string", nullable=True)]
    )
    local_lake.refresh_sql_catalog()
    rows = (
        _analyst(local_lake)
        .execute("SELECT count(*), count(room) FROM silver.audio_events")
        .fetchall()
    )
    assert rows == [(2, 0)]


def _actions(**null_counts: list[int | None]) -> pa.Table:
    n = len(next(iter(null_counts.values())))
    columns = {"path": [f"f{i}" for i in range(n)], "num_records": [10] * n}
    columns.update({f"null_count.{name}": values for name, values in null_counts.items()})
    return pa.table(columns)


SCHEMA_AB = pa.schema(
    [pa.field("a", pa.int64()), pa.field("b", pa.string()), pa.field("d", pa.date32())]
)


FOOTERS = {"f0": frozenset({"a"}), "f1": frozenset({"a", "b"})}
"""Footers of the two files: ``b`` (say, binary: no statistics) only in the newer one."""


@pytest.mark.parametrize(
    ("actions", "footers", "expected"),
    [
        (_actions(a=[0, 0], b=[0, 1]), None, (False, ())),  # same columns everywhere
        (_actions(a=[0, 0], b=[None, 2]), None, (True, ())),  # b only in the newer file
        (_actions(a=[0, 0]), {"f0": {"a"}, "f1": {"a"}}, (False, ("b",))),  # b in no file yet
        (_actions(a=[0, 0]), {"f0": {"a", "b"}, "f1": {"a", "b"}}, (False, ())),  # b: no stats
        (_actions(a=[0, 0]), FOOTERS, (True, ())),  # no stats, and only in the newer file
        (_actions(a=[0, 0]), None, (True, ())),  # no stats and no footers: read by name
        (
            _actions(a=[0, 0], b=[0, 0]).set_column(
                1, "num_records", pa.array([None, 1], pa.int64())
            ),
            None,
            (True, ()),
        ),
    ],
    ids=[
        "uniform",
        "evolved",
        "added-not-written",
        "binary-everywhere",
        "binary-evolved",
        "unknowable",
        "no-statistics",
    ],
)
def test_file_layout_reads_statistics_then_footers(actions: pa.Table, footers, expected) -> None:
    files = ("f0", "f1") if footers else ()
    columns_of = (lambda path: frozenset(footers[path])) if footers else None
    assert file_layout(actions, SCHEMA_AB, ("d",), {}, files, columns_of) == expected


def test_a_batch_is_recorded_in_one_catalog_commit_and_one_file_rebuild(
    local_lake: Lake, make_events
) -> None:
    assert local_lake.catalog_file is not None
    local_lake.append(AUDIO_EVENTS, make_events(2), writer="sidecar")
    versions_log = DeltaTable(local_lake.catalog.uri(TABLE_VERSIONS))
    before = versions_log.version()
    first = local_lake.catalog.table(AUDIO_EVENTS.name).version
    local_lake.catalog_file.unlink()
    with local_lake.batch():
        local_lake.append(AUDIO_EVENTS, make_events(2, start=2), writer="sidecar")
        local_lake.append(AUDIO_EVENTS, make_events(2, start=4), writer="sidecar")
        assert not local_lake.catalog_file.exists()  # not rebuilt inside the block
        assert local_lake.catalog.table(AUDIO_EVENTS.name).version == first  # nor recorded
    versions_log.update_incremental()
    assert versions_log.version() == before + 1  # two table commits, one catalog commit
    recorded = [e.version for e in local_lake.catalog.versions(AUDIO_EVENTS.name)]
    assert recorded == list(range(first + 3))
    assert local_lake.catalog.table(AUDIO_EVENTS.name).rows == 6
    con = _analyst(local_lake)
    assert con.execute("SELECT count(*) FROM silver.audio_events").fetchone() == (6,)
    con.close()


def test_a_batch_whose_catalog_commit_fails_is_recorded_by_the_next_sync(
    local_lake: Lake, make_events, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data commits stand; the catalog finds the versions it missed in the Delta log."""

    def unavailable(*_: object) -> None:
        raise OSError("catalog store unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(local_lake.catalog, "_append", unavailable)
        with local_lake.batch():
            local_lake.append(AUDIO_EVENTS, make_events(2), writer="sidecar")
            local_lake.append(AUDIO_EVENTS, make_events(2, start=2), writer="sidecar")
    assert local_lake.read(AUDIO_EVENTS).num_rows == 4
    local_lake.append(AUDIO_EVENTS, make_events(1, start=4), writer="sidecar")
    latest = local_lake.catalog.table(AUDIO_EVENTS.name)
    assert latest is not None and latest.rows == 5
    recorded = [e.version for e in local_lake.catalog.versions(AUDIO_EVENTS.name)]
    assert recorded == list(range(latest.version + 1))
