"""A table appended to hundreds of times stays small: the writer compacts what it wrote.

Commits are tiny (one row) so the test is about file counts and versions, not bytes; the
catalog file is rebuilt and the metadata catalog's rows committed once at the end
(``Lake.batch``). The growth benchmark takes the same path to 10,000 commits
(files per table at each mark); the slow test here takes a table past 3,000 commits at the
defaults (``make test-slow``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, CompactionPolicy, Lake, VersionNotFound
from lake_schemas.catalog import TABLE_VERSIONS
from lake_schemas.delta import local_folder
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


def test_files_just_under_the_target_are_not_rewritten_again_and_again(tmp_path: Path) -> None:
    """Optimize never fills a file exactly to the target, so a large partition holds many
    files just under it that no compaction can merge further. Counted as small, they made the
    owner compact on every commit, rewriting its partly filled file for each new one; only
    files under half the target count, so each full file is written once and stays."""
    import numpy as np

    from benchmarks.growth import batch_rows

    policy = CompactionPolicy(min_files=4, target_file_bytes=200_000)  # ~3 commits a file
    lake = Lake(tmp_path / "lakehouse", compaction=policy)
    rng = np.random.default_rng(3)
    appends = 40
    half = policy.target_file_bytes // 2
    full: set[str] = set()
    with lake.batch():
        for batch in range(1, appends + 1):
            chunks = batch_rows(batch, rng)[AUDIO_CHUNKS.name]  # ~64 kB of audio, one day
            lake.append(AUDIO_CHUNKS, chunks, writer="sidecar")
            actions = pa.table(DeltaTable(lake.uri(AUDIO_CHUNKS)).get_add_actions(flatten=True))
            paths, bytes_ = actions["path"].to_pylist(), actions["size_bytes"].to_pylist()
            sizes = dict(zip(paths, bytes_, strict=True))
            full |= {path for path, size in sizes.items() if size >= half}
    assert full <= set(sizes)  # every file at least half the target, once written, stays
    assert len(full) >= appends // 4
    small = [size for size in sizes.values() if size < half]
    assert len(small) < policy.min_files
    history = DeltaTable(lake.uri(AUDIO_CHUNKS)).history()
    optimizes = sum(commit["operation"] == "OPTIMIZE" for commit in history)
    assert optimizes <= appends // (policy.min_files - 1) + 1  # not one per commit
    assert lake.read(AUDIO_CHUNKS).num_rows == appends * 20


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


THOUSANDS = 3_000
PER_BATCH = 10


@pytest.mark.slow
def test_thousands_of_appends_keep_files_and_logs_bounded(tmp_path: Path, make_events) -> None:
    """At the defaults (compaction at 32 small files, 200 commits of log, a checkpoint every
    100): what a commit lists and what a query opens stays bounded however old the table."""
    policy = CompactionPolicy()
    lake = Lake(tmp_path / "lakehouse", compaction=policy)
    interval = int(TABLE_PROPERTIES["delta.checkpointInterval"])
    bound = policy.log_commits + 2 * interval + (policy.log_commits + 2 * interval) // interval + 1
    uri = lake.uri(AUDIO_EVENTS)
    worst_files = worst_log = 0
    versions: dict[int, int] = {}
    for start in range(0, THOUSANDS, PER_BATCH):
        with lake.batch():  # one catalog commit per batch, as the sidecar lands
            for i in range(start, start + PER_BATCH):
                result = lake.append(
                    AUDIO_EVENTS,
                    make_events(1, start=i, day=0 if i < THOUSANDS // DAYS else 1),
                    writer="sidecar",
                    app_id="sidecar-1",
                    app_version=i,
                )
                versions[i] = result.version
        if start % 250 == 0:
            worst_files = max(worst_files, *_files_per_partition(lake).values())
            for log_uri in (uri, lake.catalog.uri(TABLE_VERSIONS)):
                entries = len(list((local_folder(log_uri) / "_delta_log").iterdir()))
                worst_log = max(worst_log, entries)
    assert worst_files <= policy.min_files
    assert worst_log <= bound
    assert lake.read(AUDIO_EVENTS).num_rows == THOUSANDS
    assert lake.read(AUDIO_EVENTS, version=versions[THOUSANDS - 100]).num_rows == THOUSANDS - 99
    with pytest.raises(VersionNotFound, match="versions"):
        lake.read(AUDIO_EVENTS, version=versions[0])
    replay = lake.append(
        AUDIO_EVENTS, make_events(1, start=7), writer="sidecar", app_id="sidecar-1", app_version=7
    )
    assert replay.skipped
    con = duckdb.connect(str(lake.catalog_file), read_only=True)
    assert con.execute("SELECT count(*) FROM silver.audio_events").fetchone() == (THOUSANDS,)
    recorded = con.execute(
        "SELECT max(version) FROM meta.table_versions WHERE table_name = 'silver.audio_events'"
    ).fetchone()
    assert recorded == (DeltaTable(uri).version(),)
