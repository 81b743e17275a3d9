"""Compaction (fewer files, same rows) and vacuum (old files gone, time travel limited)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from deltalake import DeltaTable

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


def test_cluster_orders_one_partition_by_the_cluster_columns(lake: Lake, make_events) -> None:
    """Z-ordering by one column sorts the partition by it: each device's rows sit together,
    so a per-device query reads only the row groups holding that device."""
    for start in range(0, 60, 20):  # three appends, devices interleaved in each, two days
        lake.append(AUDIO_EVENTS, make_events(20, start=start, days=2), writer="w")
    day_0, day_1 = sorted(
        {str(d) for d in lake.read(AUDIO_EVENTS).column("event_date").to_pylist()}
    )
    result = lake.cluster(AUDIO_EVENTS, {"event_date": day_0}, writer="maintenance")
    assert not result.skipped and result.operation.startswith("cluster by device_id: 3 files into")
    table = DeltaTable(lake.uri(AUDIO_EVENTS), storage_options=lake.storage_options)
    dataset = table.to_pyarrow_dataset(partitions=[("event_date", "=", day_0)])
    for fragment in dataset.get_fragments():
        devices = fragment.to_table(columns=["device_id"]).column("device_id").to_pylist()
        assert devices == sorted(devices)
    assert len(table.file_uris([("event_date", "=", day_1)])) == 3  # the other day untouched
    assert lake.read(AUDIO_EVENTS).num_rows == 60
    assert lake.cluster(AUDIO_EVENTS, {"event_date": "2000-01-01"}).skipped  # no such partition
    unclustered = dataclasses.replace(AUDIO_EVENTS, cluster_by=())
    assert lake.cluster(unclustered, {"event_date": day_1}).skipped  # nothing to order by
