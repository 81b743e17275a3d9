"""silver.sessions rows: one per session, summed across the micro-batches that touched it.

Each batch produces a *delta* per session (chunks, audio and speech seconds, events landed by
that batch). At commit time the driver reads the sessions' current rows and adds the deltas;
the upsert is tagged with the batch's app transaction, so a replayed batch whose sessions
commit already happened is skipped as a whole and never adds its counts twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from lake_schemas.tables import SESSIONS

_SUMMED = ("chunks", "audio_s", "speech_s", "events")


def _combine(row: dict[str, Any] | None, delta: dict[str, Any]) -> dict[str, Any]:
    if row is None:
        row = {**delta, "dropped_chunks": None}
        for name in _SUMMED:
            row[name] = 0
    out = dict(row)
    for name in _SUMMED:
        out[name] = row[name] + delta[name]
    starts = [t for t in (row["started_at"], delta["started_at"]) if t is not None]
    ends = [t for t in (row["ended_at"], delta["ended_at"]) if t is not None]
    out["started_at"] = min(starts) if starts else None
    out["ended_at"] = max(ends) if ends else None
    if delta["dropped_chunks"] is not None:  # the gateway's total, from session_end
        out["dropped_chunks"] = delta["dropped_chunks"]
    return out


def merge_session_rows(existing: pa.Table, deltas: pa.Table, batch_time: datetime) -> pa.Table:
    """The sessions' rows after adding this batch's deltas (one row per session)."""
    current: dict[str, dict[str, Any]] = {r["session_id"]: r for r in existing.to_pylist()}
    merged: dict[str, dict[str, Any]] = {}
    for delta in deltas.to_pylist():
        session_id = delta["session_id"]
        merged[session_id] = _combine(merged.get(session_id) or current.get(session_id), delta)
    rows = []
    for row in merged.values():
        started = row["started_at"] or row["ended_at"] or batch_time
        ended = row["ended_at"] or started
        rows.append(
            {
                "session_id": row["session_id"],
                "device_id": row["device_id"],
                "encoding": row["encoding"],
                "sample_rate": row["sample_rate"],
                "started_at": started,
                "ended_at": ended,
                "chunks": int(row["chunks"]),
                "dropped_chunks": int(row["dropped_chunks"] or 0),
                "audio_s": float(row["audio_s"]),
                "speech_s": float(row["speech_s"]),
                "events": int(row["events"]),
                "session_date": started.date(),
            }
        )
    return pa.Table.from_pylist(rows, schema=SESSIONS.schema)
