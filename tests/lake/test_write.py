"""Append: create-if-missing with the spec, app transactions, lineage in every commit."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lake_schemas import AUDIO_EVENTS, Lake
from lake_schemas.lineage import code_version


def _delta(lake: Lake) -> DeltaTable:
    return DeltaTable(lake.uri(AUDIO_EVENTS), storage_options=lake.storage_options)


def test_append_creates_table_with_spec_schema_and_partitioning(lake: Lake, make_events) -> None:
    assert not lake.exists(AUDIO_EVENTS)
    result = lake.append(AUDIO_EVENTS, make_events(12, days=3), writer="test-writer")
    assert lake.exists(AUDIO_EVENTS)
    assert (result.version, result.rows, result.skipped) == (1, 12, False)  # 0 is CREATE
    table = _delta(lake)
    assert pa.schema(table.schema().to_arrow()) == AUDIO_EVENTS.schema
    assert table.metadata().partition_columns == ["event_date"]
    assert table.metadata().name == AUDIO_EVENTS.name
    assert len({p["event_date"] for p in table.partitions()}) == 3
    read = lake.read(AUDIO_EVENTS)
    assert read.num_rows == 12
    assert read.schema == AUDIO_EVENTS.schema


def test_app_transaction_skips_versions_already_committed(lake: Lake, make_events) -> None:
    first = lake.append(AUDIO_EVENTS, make_events(5), writer="w", app_id="sidecar-a", app_version=1)
    second = lake.append(
        AUDIO_EVENTS, make_events(5, start=5), writer="w", app_id="sidecar-a", app_version=2
    )
    assert lake.transaction_version(AUDIO_EVENTS, "sidecar-a") == 2
    replay = lake.append(
        AUDIO_EVENTS, make_events(5), writer="w", app_id="sidecar-a", app_version=2
    )
    stale = lake.append(AUDIO_EVENTS, make_events(5), writer="w", app_id="sidecar-a", app_version=1)
    assert not first.skipped and not second.skipped
    assert replay.skipped and stale.skipped
    assert replay.version == stale.version == second.version
    assert replay.rows == 0
    assert lake.read(AUDIO_EVENTS).num_rows == 10
    # Delta itself would have recorded the stale version 1; ours kept 2.
    assert lake.transaction_version(AUDIO_EVENTS, "sidecar-a") == 2
    # Another writer's app_id is independent.
    other = lake.append(
        AUDIO_EVENTS, make_events(1, start=99), writer="w2", app_id="b", app_version=1
    )
    assert not other.skipped


def test_every_commit_carries_lineage(lake: Lake, make_events) -> None:
    lake.append(AUDIO_EVENTS, make_events(3), writer="sidecar", app_id="sidecar-7", app_version=4)
    lake.append(AUDIO_EVENTS, make_events(3, start=3), writer="backfill")
    newest, previous, created = lake.history(AUDIO_EVENTS)[:3]
    assert newest["writer"] == "backfill" and "app_id" not in newest
    assert previous["writer"] == "sidecar"
    assert (previous["app_id"], previous["app_version"]) == ("sidecar-7", 4)
    assert created["operation"] == "CREATE TABLE" and created["writer"] == "sidecar"
    for commit in (newest, previous, created):
        assert commit["code_version"] == code_version()
    assert code_version().startswith("0.")


def test_empty_append_with_app_transaction_records_it(local_lake: Lake, make_events) -> None:
    result = local_lake.append(AUDIO_EVENTS, make_events(0), writer="w", app_id="a", app_version=3)
    assert not result.skipped and result.rows == 0
    assert local_lake.transaction_version(AUDIO_EVENTS, "a") == 3


@pytest.mark.parametrize(
    ("app_id", "app_version"),
    [("a", None), (None, 1), ("a", -1)],
    ids=["no-version", "no-id", "negative"],
)
def test_app_transaction_arguments_are_checked(
    local_lake: Lake, make_events, app_id, app_version
) -> None:
    with pytest.raises(ValueError, match="app_"):
        local_lake.append(
            AUDIO_EVENTS, make_events(1), writer="w", app_id=app_id, app_version=app_version
        )
    assert not local_lake.exists(AUDIO_EVENTS)


def test_object_store_errors_are_told_from_local_ones() -> None:
    """What the sidecar waits out (the store away, however delta-rs wraps it) and what it
    does not (a local file error)."""
    from deltalake.exceptions import DeltaError

    from lake_schemas.delta import is_store_unavailable

    put_failed = (
        "Failed to parse parquet: External: Generic S3 error: Error performing PUT "
        "http://127.0.0.1:1/bucket/part-0.parquet after 10 retries - HTTP error: error sending"
    )
    assert is_store_unavailable(DeltaError(put_failed))
    assert is_store_unavailable(OSError("Generic S3 error: error sending request"))
    assert not is_store_unavailable(DeltaError("Schema mismatch: column pcm"))
    assert not is_store_unavailable(FileNotFoundError(2, "No such file"))
    assert not is_store_unavailable(OSError(28, "No space left on device"))
