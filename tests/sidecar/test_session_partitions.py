"""Which silver.sessions partitions a batch reads: from the creation time in the gateway's ids."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from streaming.session_ids import created_at, new_session_id
from streaming.sidecar.session_rows import MAX_SPAN_DAYS, partitions_holding


def _id_created(when: datetime) -> str:
    """A UUIDv7 (as the gateway writes it) created at ``when``."""
    return f"{int(when.timestamp() * 1000):012x}7abc8" + "0" * 15


def test_an_issued_id_carries_its_creation_time() -> None:
    before = datetime.now(UTC)
    when = created_at(new_session_id())
    assert when is not None and before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert uuid.UUID(new_session_id()).version == 7
    # Not the gateway's: other ids, a UUIDv4, the format before UUIDv7, an implausible time.
    assert created_at("s0") is None and created_at("A" * 32) is None
    assert created_at(uuid.uuid4().hex) is None
    assert created_at("01a2431b6782" + "e48aede92855a6f5f1") is None
    assert created_at("000000000001" + "7abc8" + "0" * 15) is None
    assert created_at(_id_created(datetime(2026, 3, 1, 12, tzinfo=UTC))) == datetime(
        2026, 3, 1, 12, tzinfo=UTC
    )


def test_a_batch_reads_from_the_day_before_its_oldest_session_to_the_day_after_it() -> None:
    batch = datetime(2026, 12, 4, 0, 0, 5, tzinfo=UTC)
    ids = [_id_created(batch - timedelta(seconds=10)), _id_created(batch - timedelta(hours=30))]
    assert partitions_holding(ids, batch) == [
        date(2026, 12, 1),
        date(2026, 12, 2),
        date(2026, 12, 3),
        date(2026, 12, 4),
        date(2026, 12, 5),
    ]


def test_ids_the_gateway_did_not_issue_or_very_old_sessions_read_the_whole_table() -> None:
    batch = datetime(2026, 12, 4, tzinfo=UTC)
    assert partitions_holding([_id_created(batch), "bench-7"], batch) is None
    old = batch - timedelta(days=MAX_SPAN_DAYS + 1)
    assert partitions_holding([_id_created(old)], batch) is None
    future = batch + timedelta(days=5)  # a clock far ahead: not trusted
    assert partitions_holding([_id_created(future)], batch) is None
    assert partitions_holding([], batch) is None
