"""silver.sessions rows: one per session, summed across the micro-batches that touched it.

Each batch produces a *delta* per session (chunks, audio and speech seconds, events landed by
that batch). At commit time the driver reads the sessions' current rows and adds the deltas;
the upsert is tagged with the batch's app transaction, so a replayed batch whose sessions
commit already happened is skipped as a whole and never adds its counts twice. Columnar: one
``group_by`` over the current rows and the deltas together.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas.tables import SESSIONS, TIMESTAMP
from streaming.session_ids import created_at

CLOCK_SLACK = timedelta(days=1)
"""How far a session's start may lie before its id's creation time (its first chunk's audio
began before it arrived; clocks of two machines differ) or after this batch (a worker's
clock ahead of the sidecar's)."""
MAX_SPAN_DAYS = 31
"""Sessions reaching back further than this make the batch read the whole table instead."""


def partitions_holding(session_ids: Iterable[str], batch_time: datetime) -> list[date] | None:
    """The ``silver.sessions`` partitions where these sessions' rows can already be, or None
    when that is not known (an id the gateway did not issue, a span beyond
    :data:`MAX_SPAN_DAYS`).

    A session the gateway opened has its row in the date its id carries (see
    :func:`session_dates`), so one day would do; the day either side also covers rows an
    earlier version placed by the session's first event time (within a chunk's length of
    its creation, on the gateway's clock, and never after this batch). The row of a session
    created yesterday is therefore found in three partitions, whatever the table holds
    besides, and a batch reads and merges those only.
    """
    created = [created_at(session_id) for session_id in session_ids]
    if not created or any(when is None for when in created):
        return None
    first = (min(when for when in created if when is not None) - CLOCK_SLACK).date()
    last = (batch_time + CLOCK_SLACK).date()
    if first > last or (last - first).days > MAX_SPAN_DAYS:
        return None
    return [first + timedelta(days=day) for day in range((last - first).days + 1)]


def session_dates(session_ids: pa.ChunkedArray | pa.Array, started: pa.Array) -> pa.Array:
    """``session_date``, the row's partition: the UTC day the gateway opened the session, read
    from its id, so a row never moves and a batch knows where to find it; for an id no
    gateway issued, the day of the session's earliest event time."""
    opened = [created_at(session_id) for session_id in session_ids.to_pylist()]
    from_ids = pa.array([None if when is None else when.date() for when in opened], pa.date32())
    return pc.coalesce(from_ids, pc.cast(started, pa.date32()))


def merge_session_rows(existing: pa.Table, deltas: pa.Table, batch_time: datetime) -> pa.Table:
    """The sessions' rows after adding this batch's deltas (one row per session).

    ``dropped_chunks`` is the gateway's running total (from ``session_end``), so the largest
    known value wins; start and end are the earliest and latest seen.
    """
    columns = ["session_id", "device_id", "encoding", "sample_rate", "started_at", "ended_at"]
    numbers = ["chunks", "dropped_chunks", "audio_s", "speech_s", "events"]
    both = pa.concat_tables(
        [
            existing.select(columns + numbers).cast(deltas.schema),
            deltas.select(columns + numbers),
        ]
    )
    merged = both.group_by("session_id", use_threads=False).aggregate(
        [
            ("device_id", "first"),
            ("encoding", "first"),
            ("sample_rate", "first"),
            ("started_at", "min"),
            ("ended_at", "max"),
            ("chunks", "sum"),
            ("dropped_chunks", "max"),
            ("audio_s", "sum"),
            ("speech_s", "sum"),
            ("events", "sum"),
        ]
    )
    fallback = pa.scalar(batch_time, TIMESTAMP)
    started = pc.coalesce(merged.column("started_at_min"), merged.column("ended_at_max"), fallback)
    ended = pc.coalesce(merged.column("ended_at_max"), started)
    return pa.table(
        {
            "session_id": merged.column("session_id"),
            "device_id": merged.column("device_id_first"),
            "encoding": merged.column("encoding_first"),
            "sample_rate": merged.column("sample_rate_first"),
            "started_at": started,
            "ended_at": ended,
            "chunks": merged.column("chunks_sum"),
            "dropped_chunks": pc.fill_null(merged.column("dropped_chunks_max"), 0),
            "audio_s": merged.column("audio_s_sum"),
            "speech_s": merged.column("speech_s_sum"),
            "events": merged.column("events_sum"),
            "session_date": session_dates(merged.column("session_id"), started),
        },
    ).cast(SESSIONS.schema)
