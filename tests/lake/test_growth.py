"""A table appended to hundreds of times stays small: the writer compacts what it wrote.

Commits are tiny (one row) so the test is about file counts and versions, not bytes; the
catalog file is rebuilt and the metadata catalog's rows committed once at the end
(``Lake.batch``). The growth benchmark takes the same path to 10,000 commits
(files per table at each mark).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from lake_schemas import AUDIO_EVENTS, CompactionPolicy, Lake
from lake_schemas.tables import TABLE_PROPERTIES

APPENDS = 160
MIN_FILES = 4
DAYS = 2


def _files_per_partition(lake: Lake) -> dict[str, int]:
    actions = pa.table(DeltaTable(lake.uri(AUDIO_EVENTS)).get_add_actions(flatten=True)).to_pylist()
    counts: dict[str, int] = {}
    for action in actions:
        day = str(action["partition.event_date"])
        counts[day] = counts.get(day, 0) + 1
    return counts


def test_hundreds_of_appends_stay_within_a_bounded_file_count(tmp_path: Path, make_events) -> None:
    lake = Lake(tmp_path / "lakehouse", compaction=CompactionPolicy(min_files=MIN_FILES))
    worst = 0
    versions: dict[int, int] = {}
    with lake.batch():
        for i in range(APPENDS):
            # Mostly one partition per commit; the day moves on halfway, as a clock would.
            day = 0 if i < APPENDS // DAYS else 1
            result = lake.append(
                AUDIO_EVENTS,
                make_events(1, start=i, day=day),
                writer="sidecar",
                app_id="sidecar-1",
                app_version=i,
            )
            versions[i] = result.version
            if i % 100 == 99:
                counts = _files_per_partition(lake)
                worst = max(worst, *counts.values())
    assert worst <= MIN_FILES  # never more than the threshold per partition
    counts = _files_per_partition(lake)
    assert len(counts) == DAYS and all(n <= MIN_FILES for n in counts.values())
    assert lake.read(AUDIO_EVENTS).num_rows == APPENDS
    # Time travel across compactions (nothing vacuumed): any version reads as it was.
    for i in (0, 123, APPENDS // DAYS, APPENDS - 1):
        assert lake.read(AUDIO_EVENTS, version=versions[i]).num_rows == i + 1
    # Exactly once: replaying a landed batch is still skipped after compactions.
    replay = lake.append(
        AUDIO_EVENTS, make_events(1, start=7), writer="sidecar", app_id="sidecar-1", app_version=7
    )
    assert replay.skipped and lake.read(AUDIO_EVENTS).num_rows == APPENDS
    history = DeltaTable(lake.uri(AUDIO_EVENTS)).history(APPENDS * 2)
    assert sum(commit["operation"] == "OPTIMIZE" for commit in history) >= APPENDS // MIN_FILES
    # The SQL catalog agrees and the metadata catalog recorded every version.
    con = lake.connect_sql()
    assert con.execute("SELECT count(*) FROM silver.audio_events").fetchone() == (APPENDS,)
    latest = lake.catalog.table(AUDIO_EVENTS.name)
    assert latest is not None and latest.version == DeltaTable(lake.uri(AUDIO_EVENTS)).version()


def test_compaction_can_be_switched_off(tmp_path: Path, make_events) -> None:
    lake = Lake(tmp_path / "lakehouse", compaction=CompactionPolicy(min_files=0))
    with lake.batch():
        for i in range(12):
            lake.append(AUDIO_EVENTS, make_events(1, start=i), writer="w")
    assert _files_per_partition(lake) == {"2024-03-01": 12}


def test_tables_are_created_with_deliberate_log_settings(local_lake: Lake, make_events) -> None:
    local_lake.append(AUDIO_EVENTS, make_events(1), writer="w")
    configuration = DeltaTable(local_lake.uri(AUDIO_EVENTS)).metadata().configuration
    assert {k: configuration.get(k) for k in TABLE_PROPERTIES} == TABLE_PROPERTIES
    catalog = DeltaTable(f"{local_lake.root}/_catalog/table_versions").metadata().configuration
    assert (
        catalog.get("delta.logRetentionDuration") == TABLE_PROPERTIES["delta.logRetentionDuration"]
    )


def test_the_growth_benchmark_lands_rows_of_every_table_it_writes(tmp_path: Path) -> None:
    """Its synthetic batches keep up with the tables' schemas (a new bronze column once broke
    it unnoticed): one batch lands through the Lake, its catalog commit timed."""
    import numpy as np

    from benchmarks.growth import SIDECAR_TABLES, CatalogCommitTimer, batch_rows, land_batch

    lake = Lake(tmp_path / "lakehouse")
    catalog = CatalogCommitTimer(lake)
    walls, cpu_ms = land_batch(lake, 1, batch_rows(1, np.random.default_rng(0)), catalog)
    assert len(walls) == len(SIDECAR_TABLES) and cpu_ms > 0 and catalog.last_ms > 0
    for spec in SIDECAR_TABLES:
        assert lake.read(spec).num_rows > 0
        assert lake.catalog.table(spec.name) is not None
