"""Compaction (fewer files, same rows) and vacuum (old files gone, time travel limited)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lake_schemas import AUDIO_EVENTS, Lake, TableNotFound, VersionNotFound


def _files(lake: Lake) -> int:
    entry = lake.catalog.table(AUDIO_EVENTS.name)
    assert entry is not None and entry.files is not None
    return entry.files


def test_compact_merges_small_files_and_keeps_rows(lake: Lake, make_events) -> None:
    for batch in range(3):
        lake.append(AUDIO_EVENTS, make_events(5, start=batch * 5), writer="sidecar")
    before = lake.read(AUDIO_EVENTS).sort_by("event_id")
    assert _files(lake) == 3
    result = lake.compact(AUDIO_EVENTS, writer="maintenance")
    assert not result.skipped and result.version == 4
    assert _files(lake) == 1
    assert lake.read(AUDIO_EVENTS).sort_by("event_id").equals(before)
    assert lake.history(AUDIO_EVENTS, 1)[0]["operation"] == "OPTIMIZE"
    assert lake.catalog.table(AUDIO_EVENTS.name).writer == "maintenance"
    assert lake.compact(AUDIO_EVENTS).skipped  # nothing left to merge


def test_vacuum_deletes_unreferenced_files_and_limits_time_travel(
    local_lake: Lake, make_events
) -> None:
    lake = local_lake
    first = lake.append(AUDIO_EVENTS, make_events(5), writer="w").version
    lake.append(AUDIO_EVENTS, make_events(5, start=5), writer="w")
    lake.compact(AUDIO_EVENTS)
    assert lake.read(AUDIO_EVENTS, version=first).num_rows == 5
    deleted = lake.vacuum(AUDIO_EVENTS, retention_hours=0)
    assert len(deleted) == 2  # the two files compaction replaced
    assert lake.read(AUDIO_EVENTS).num_rows == 10
    with pytest.raises((VersionNotFound, OSError)):
        lake.read(AUDIO_EVENTS, version=first)
    assert not any(Path(path).exists() for path in deleted)


def test_maintenance_needs_an_existing_table(local_lake: Lake) -> None:
    with pytest.raises(TableNotFound):
        local_lake.compact(AUDIO_EVENTS)
    with pytest.raises(TableNotFound):
        local_lake.vacuum(AUDIO_EVENTS, retention_hours=1)
    with pytest.raises(ValueError):
        local_lake.vacuum(AUDIO_EVENTS, retention_hours=-1)
