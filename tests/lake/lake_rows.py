"""Synthetic silver.audio_events rows for the lake tests (and their child processes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from lake_schemas import AUDIO_EVENTS

DAY_0 = datetime(2024, 3, 1, tzinfo=UTC)
LABELS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def events(
    n: int, *, start: int = 0, day: int = 0, device: str | None = None, days: int = 1
) -> pa.Table:
    """``n`` rows with ids ``ev-<start>…``, devices spk-0..2, spread over ``days`` days."""
    ids = range(start, start + n)
    starts = [DAY_0 + timedelta(days=day + (i % days), seconds=i) for i in ids]
    return pa.Table.from_pydict(
        {
            "event_id": [f"ev-{i:06d}" for i in ids],
            "session_id": [f"sess-{i // 10}" for i in ids],
            "device_id": [device or f"spk-{i % 3}" for i in ids],
            "start_time": starts,
            "end_time": [t + timedelta(milliseconds=800) for t in starts],
            "duration_s": [0.8] * n,
            "rms_dbfs": [-30.0 + (i % 20) for i in ids],
            "peak_dbfs": [-6.0] * n,
            "clipping_ratio": [0.0] * n,
            "snr_db": [15.0] * n,
            "speech_ratio": [0.7] * n,
            "predicted_label": [LABELS[i % len(LABELS)] for i in ids],
            "score": [0.9] * n,
            "model_version": ["1"] * n,
            "label": [None] * n,
            "first_seq": list(ids),
            "last_seq": [i + 7 for i in ids],
            "sample_rate": pa.array([16_000] * n, pa.int32()),
            "feature_version": ["logmel-v1"] * n,
            "event_date": [t.date() for t in starts],
        },
        schema=AUDIO_EVENTS.schema,
    )
