"""silver.sessions rows: one per session, summed across the micro-batches that touched it.

Each batch produces a *delta* per session (chunks, audio and speech seconds, events landed by
that batch). At commit time the driver reads the sessions' current rows and adds the deltas;
the upsert is tagged with the batch's app transaction, so a replayed batch whose sessions
commit already happened is skipped as a whole and never adds its counts twice. Columnar: one
``group_by`` over the current rows and the deltas together.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas.tables import SESSIONS, TIMESTAMP


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
            "session_date": pc.cast(started, pa.date32()),
        },
    ).cast(SESSIONS.schema)
