"""A local table's log stays bounded in commits, and time travel says where its window ends.

delta-rs lists a local table's whole ``_delta_log`` on every commit, so the owner keeps a
bounded number of commits (``CompactionPolicy.log_commits``). The checkpoint interval is made
small here (10, where tables are created with 100) so a few dozen commits cross several.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lake_schemas import (
    AUDIO_EVENTS,
    CompactionPolicy,
    Lake,
    MetadataCatalog,
    VersionNotFound,
    delta,
    tables,
)
from lake_schemas.catalog import TABLE_VERSIONS, TableEntry
from lake_schemas.delta import trim_local_log

INTERVAL = 10
KEEP = 20
BATCHES = 60
BOUND = (KEEP + 2 * INTERVAL) + (KEEP + 2 * INTERVAL) // INTERVAL + 1
"""Entries a log holds at most: trimmed once per interval, to the newest checkpoint at least
KEEP behind, so up to KEEP + 2 intervals of commit files, a checkpoint per interval, and
``_last_checkpoint``."""


def _log_entries(uri: str) -> list[str]:
    return sorted(p.name for p in (delta.local_folder(uri) / "_delta_log").iterdir())


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"")


def _version_row(entry: TableEntry) -> dict[str, Any]:
    """A ``table_versions`` row like ``entry``'s, for a test to record under other versions."""
    return {
        "table_name": entry.name,
        "layer": entry.layer,
        "location": entry.location,
        "committed_at": entry.committed_at,
        "operation": entry.operation,
        "writer": entry.writer,
        "app_id": None,
        "app_version": None,
        "code_version": entry.code_version,
        "rows": entry.rows,
        "files": entry.files,
        "schema_json": entry.schema_json,
        "recorded_at": datetime.now(UTC),
    }


def test_only_entries_before_a_checkpoint_old_enough_go(tmp_path: Path) -> None:
    log_dir = tmp_path / "table" / "_delta_log"
    log_dir.mkdir(parents=True)
    _touch(log_dir, *(f"{v:020d}.json" for v in range(36)), "_last_checkpoint", "x.tmp")
    _touch(log_dir, *(f"{v:020d}.checkpoint.parquet" for v in (9, 19, 29)))
    _touch(log_dir, f"{3:020d}.crc")
    uri = str(tmp_path / "table")
    # Head 35, keep 20: the newest checkpoint at least 20 behind is 9 (19 is only 16 behind).
    assert trim_local_log(uri, head=35, keep_commits=20) == 10  # 0..8 and the .crc
    names = _log_entries(uri)
    assert f"{9:020d}.json" in names and f"{9:020d}.checkpoint.parquet" in names
    assert f"{8:020d}.json" not in names and f"{3:020d}.crc" not in names
    assert {"_last_checkpoint", "x.tmp"} <= set(names)  # other shapes are left alone
    assert trim_local_log(uri, head=35, keep_commits=20) == 0  # nothing more until head moves
    assert trim_local_log(uri, head=39, keep_commits=20) == 11  # now 19 is old enough
    assert trim_local_log(uri, head=39, keep_commits=0) == 0  # 0: never


def test_a_table_committed_to_many_times_keeps_a_bounded_log(
    tmp_path: Path, make_events, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(tables.TABLE_PROPERTIES, "delta.checkpointInterval", str(INTERVAL))
    monkeypatch.setattr(delta, "CHECKPOINT_INTERVAL", INTERVAL)
    lake = Lake(tmp_path / "lakehouse", compaction=CompactionPolicy(min_files=8, log_commits=KEEP))
    versions: dict[int, int] = {}
    stamps: dict[int, datetime] = {}
    worst = 0
    with lake.batch():
        for i in range(BATCHES):
            result = lake.append(
                AUDIO_EVENTS, make_events(1, start=i), writer="sidecar", app_id="s", app_version=i
            )
            versions[i] = result.version
            stamps[i] = datetime.now(UTC)
            time.sleep(0.002)  # commit timestamps are milliseconds
            worst = max(worst, len(_log_entries(lake.uri(AUDIO_EVENTS))))
    uri = lake.uri(AUDIO_EVENTS)
    assert DeltaTable(uri).version() >= BATCHES  # compactions add versions too
    assert worst <= BOUND
    oldest = min(int(name[:20]) for name in _log_entries(uri) if name[:20].isdigit())
    assert oldest > 0 and oldest % INTERVAL == INTERVAL - 1  # a checkpoint's version
    # The table reads whole, from a fresh open as from the writer's own snapshot.
    assert DeltaTable(uri).to_pyarrow_table().num_rows == BATCHES
    assert lake.read(AUDIO_EVENTS).num_rows == BATCHES
    # Exactly once still holds: the app transaction lives on in the checkpoint.
    replay = lake.append(
        AUDIO_EVENTS, make_events(1, start=3), writer="sidecar", app_id="s", app_version=3
    )
    assert replay.skipped
    # Time travel inside the window, across compactions, by version and by time.
    recent = [i for i in versions if versions[i] >= oldest]
    for i in (recent[0], recent[len(recent) // 2], recent[-1]):
        assert lake.read(AUDIO_EVENTS, version=versions[i]).num_rows == i + 1
        assert lake.read(AUDIO_EVENTS, as_of=stamps[i]).num_rows == i + 1
    # Outside it: an error that says where the window starts, never a later snapshot.
    with pytest.raises(VersionNotFound, match=r"versions \d+–\d+"):
        lake.read(AUDIO_EVENTS, version=versions[0])
    with pytest.raises(VersionNotFound, match=f"kept from version {oldest}"):
        lake.read(AUDIO_EVENTS, as_of=stamps[0])
    with pytest.raises(VersionNotFound, match="kept from version"):
        lake.connect_sql(as_of=stamps[0] - timedelta(milliseconds=1))


def test_the_catalogs_own_tables_keep_a_bounded_log(
    tmp_path: Path, make_events, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They take a commit per batch of every writer, so they grow fastest of all."""
    monkeypatch.setitem(tables.TABLE_PROPERTIES, "delta.checkpointInterval", str(INTERVAL))
    monkeypatch.setattr(delta, "CHECKPOINT_INTERVAL", INTERVAL)
    lake = Lake(tmp_path / "lakehouse", compaction=CompactionPolicy(log_commits=KEEP))
    lake.append(AUDIO_EVENTS, make_events(1), writer="w")
    before = len(lake.catalog.versions(AUDIO_EVENTS.name))
    entry = lake.catalog.versions(AUDIO_EVENTS.name)[-1]
    catalog = MetadataCatalog(lake.root, log_trimmer=delta.LogTrimmer(KEEP))
    template = _version_row(entry)
    for version in range(BATCHES):
        catalog.record([{**template, "version": 1000 + version}])
    assert len(_log_entries(catalog.uri(TABLE_VERSIONS))) <= BOUND
    assert len(catalog.versions(AUDIO_EVENTS.name)) == BATCHES + before


def test_a_table_never_trimmed_still_reads_empty_before_it_existed(
    local_lake: Lake, make_events
) -> None:
    before = datetime.now(UTC) - timedelta(hours=1)
    local_lake.append(AUDIO_EVENTS, make_events(2), writer="w")
    assert local_lake.read(AUDIO_EVENTS, as_of=before).num_rows == 0
    con = local_lake.connect_sql(as_of=before)
    assert con.execute("SELECT count(*) FROM silver.audio_events").fetchone() == (0,)


def test_the_catalogs_compaction_leaves_its_large_files_in_place(
    tmp_path: Path, make_events, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It merges its small files once there are many, into files of about its target; files
    past half the target stay where they are, so a compaction never rewrites the whole log."""
    from lake_schemas import catalog as catalog_module

    monkeypatch.setattr(catalog_module, "COMPACT_AFTER_FILES", 4)
    monkeypatch.setattr(catalog_module, "CATALOG_TARGET_FILE_BYTES", 24_000)
    lake = Lake(tmp_path / "lakehouse")
    lake.append(AUDIO_EVENTS, make_events(1), writer="w")
    entry = lake.catalog.versions(AUDIO_EVENTS.name)[-1]
    catalog = MetadataCatalog(lake.root)
    uri = catalog.uri(TABLE_VERSIONS)
    row = _version_row(entry)
    settled: set[str] = set()
    recorded = len(catalog.versions(AUDIO_EVENTS.name))
    for record in range(60):
        catalog.record(
            [
                # random text: the file sizes grow as the rows do, not by compression's whim
                {**row, "version": 1000 + 40 * record + k, "schema_json": secrets.token_hex(100)}
                for k in range(40)
            ]
        )
        actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True)).to_pydict()
        sizes = dict(zip(actions["path"], actions["size_bytes"], strict=True))
        assert settled <= set(sizes), "a file past half the target was rewritten"
        settled |= {path for path, size in sizes.items() if size >= 12_000}
        assert sum(size < 12_000 for size in sizes.values()) < 4
    assert len(settled) >= 3
    assert len(catalog.versions(AUDIO_EVENTS.name)) == recorded + 2400  # every row kept
