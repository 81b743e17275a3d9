"""An event's audio, put back together from the raw chunks in bronze.

silver.audio_events says where each event is: its session, the chunk range
``first_seq..last_seq``, its start time and duration. bronze.audio_chunks holds those chunks'
bytes exactly as the client sent them. Decoding the range, resampling it to 16 kHz and cutting
``[start, start + duration)`` gives the same segment the sidecar measured (up to the resampler's
edge effects at the range's ends, a few samples), so features computed later in batch match
what was seen live.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.pcm import SAMPLE_RATE_HZ, decode, resample, to_float

US_PER_S = 1_000_000
CHUNK_COLUMNS = ["session_id", "seq", "event_time", "sample_rate", "encoding", "pcm"]
"""The bronze columns reassembly reads."""
EVENT_COLUMNS = ["event_id", "session_id", "first_seq", "last_seq", "start_time", "duration_s"]
"""The silver columns reassembly reads."""


@dataclass(frozen=True)
class EventAudio:
    event_id: str
    audio_16k: np.ndarray
    """float32 mono at 16 kHz, in [-1, 1)."""


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp_us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    return (value - EPOCH) // timedelta(microseconds=1)


def event_segment(
    chunks: pa.Table, first_seq: int, last_seq: int, start_us: int, duration_s: float
) -> np.ndarray:
    """The 16 kHz segment of one event from its session's chunks (any order, may hold more).

    Raises ValueError when a chunk of the range is missing from ``chunks``.
    """
    seqs = chunks.column("seq")
    in_range = chunks.filter(
        pc.and_(pc.greater_equal(seqs, first_seq), pc.less_equal(seqs, last_seq))
    ).sort_by("seq")
    expected = last_seq - first_seq + 1
    if in_range.num_rows < expected:
        raise ValueError(
            f"chunks {first_seq}..{last_seq} needed, {in_range.num_rows} of {expected} in bronze"
        )
    encoding = in_range.column("encoding")[0].as_py()
    rate = int(in_range.column("sample_rate")[0].as_py())
    samples = np.concatenate([decode(b, encoding) for b in in_range.column("pcm").to_pylist()])
    audio = resample(to_float(samples), rate, SAMPLE_RATE_HZ)
    first_chunk_us = _timestamp_us(in_range.column("event_time")[0].as_py())
    offset = max(0, round((start_us - first_chunk_us) * SAMPLE_RATE_HZ / US_PER_S))
    length = max(1, round(duration_s * SAMPLE_RATE_HZ))
    return audio[offset : offset + length]


def event_segments(events: pa.Table, chunks: pa.Table) -> Iterator[EventAudio]:
    """Every event's audio, session by session (``chunks`` holds those sessions' chunks).

    Events whose chunks are not all in ``chunks`` are left out.
    """
    if events.num_rows == 0:
        return
    by_session = chunks.group_by("session_id").aggregate([])  # the sessions present
    present = set(by_session.column("session_id").to_pylist())
    for session_id in sorted(set(events.column("session_id").to_pylist())):
        if session_id not in present:
            continue
        session_chunks = chunks.filter(pc.equal(chunks.column("session_id"), session_id))
        session_events = events.filter(pc.equal(events.column("session_id"), session_id))
        for row in session_events.to_pylist():
            start_us = _timestamp_us(row["start_time"])
            try:
                audio = event_segment(
                    session_chunks, row["first_seq"], row["last_seq"], start_us, row["duration_s"]
                )
            except ValueError:
                continue  # a chunk of the range is not in bronze (yet): the caller counts it
            yield EventAudio(row["event_id"], audio)
