"""Reads: filter pushdown, time travel by version and by timestamp."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from lake_schemas import AUDIO_EVENTS, Lake, TableNotFound, VersionNotFound


def test_read_by_version_and_by_timestamp(lake: Lake, make_events) -> None:
    # A commit's time is its log file's modification time: milliseconds on a local disk,
    # whole seconds on S3. Start the second commit in a later second than `between`.
    v1 = lake.append(AUDIO_EVENTS, make_events(3), writer="w").version
    between = datetime.now(UTC)
    time.sleep(1.05 - between.microsecond / 1e6)
    v2 = lake.append(AUDIO_EVENTS, make_events(4, start=3), writer="w").version
    assert lake.read(AUDIO_EVENTS, version=v1).num_rows == 3
    assert lake.read(AUDIO_EVENTS, version=v2).num_rows == 7
    assert lake.read(AUDIO_EVENTS, as_of=between).num_rows == 3
    assert lake.read(AUDIO_EVENTS, as_of=between.replace(tzinfo=None)).num_rows == 3  # naive = UTC
    assert lake.read(AUDIO_EVENTS, as_of=datetime.now(UTC) + timedelta(hours=1)).num_rows == 7
    assert lake.dataset(AUDIO_EVENTS, version=v1).count_rows() == 3
    with pytest.raises(VersionNotFound):
        lake.read(AUDIO_EVENTS, version=v2 + 5)
    with pytest.raises(ValueError, match="not both"):
        lake.read(AUDIO_EVENTS, version=v1, as_of=between)


def test_filters_push_down_to_partitions_and_rows(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(30, days=3), writer="w")
    one_day = lake.read(
        AUDIO_EVENTS, filter=[("event_date", "=", make_events(1).column("event_date")[0].as_py())]
    )
    assert one_day.num_rows == 10
    device = lake.read(
        AUDIO_EVENTS, columns=["event_id", "device_id"], filter=pc.field("device_id") == "spk-1"
    )
    assert device.num_rows == 10 and device.column_names == ["event_id", "device_id"]
    assert set(device.column("device_id").to_pylist()) == {"spk-1"}
    dataset = lake.dataset(AUDIO_EVENTS)
    fragments = list(
        dataset.get_fragments(filter=pc.field("event_date") == one_day.column("event_date")[0])
    )
    assert len(fragments) == 1  # the partition filter pruned the other days' files


def test_missing_table_reads_empty_but_cannot_travel(local_lake: Lake) -> None:
    empty = local_lake.read(AUDIO_EVENTS)
    assert empty.num_rows == 0 and empty.schema == AUDIO_EVENTS.schema
    with pytest.raises(TableNotFound):
        local_lake.read(AUDIO_EVENTS, version=0)
