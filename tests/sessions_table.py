"""silver.sessions rows as the sidecar writes them, for tests that seed the table."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from lake_schemas import SESSIONS


def session_rows(ids: list[str], day: date, *, chunks: int = 1, device_id: str = "d1") -> pa.Table:
    """One row per id, started at noon (UTC) of ``day`` and partitioned there."""
    start = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    n = len(ids)
    return pa.table(
        {
            "session_id": ids,
            "device_id": [device_id] * n,
            "encoding": ["linear16"] * n,
            "sample_rate": pa.array([16000] * n, pa.int32()),
            "started_at": pa.array([start] * n, pa.timestamp("us", tz="UTC")),
            "ended_at": pa.array([start] * n, pa.timestamp("us", tz="UTC")),
            "chunks": pa.array([chunks] * n, pa.int64()),
            "dropped_chunks": pa.array([0] * n, pa.int64()),
            "audio_s": [chunks * 0.1] * n,
            "speech_s": [0.0] * n,
            "events": pa.array([0] * n, pa.int64()),
            "session_date": pa.array([day] * n, pa.date32()),
        }
    ).cast(SESSIONS.schema)
