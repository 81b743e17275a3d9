"""Audio read back from the lake: events reassembled from bronze, runs of labelled chunks.

silver.audio_events says where each event is: its session, the chunk range
``first_seq..last_seq``, its start time and duration. bronze.audio_chunks holds those chunks'
bytes exactly as the client sent them. Decoding the range as one stream
(:func:`features.pcm.chunks_to_16k`), and cutting ``[start, start + duration)`` gives the
same segment the sidecar measured (up to the resampler's edge effects at the range's ends, a
few samples), so features computed later in batch match what was seen live. Training windows
take the span the gateway's classifier heard instead: with its pre-roll and tail
(``classified=True``), so a model learns on the windows it is served.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.pcm import SAMPLE_RATE_HZ, chunks_to_16k
from features.window import UTTERANCE_PRE_ROLL_MS, classified_span
from lake_schemas import AUDIO_CHUNKS, Lake

US_PER_S = 1_000_000
CHUNK_COLUMNS = ["session_id", "seq", "event_time", "sample_rate", "encoding", "pcm"]
"""The bronze columns reassembly reads."""
EVENT_COLUMNS = ["event_id", "session_id", "first_seq", "last_seq", "start_time", "duration_s"]
"""The silver columns reassembly reads."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class EventAudio:
    event_id: str
    audio_16k: np.ndarray
    """float32 mono at 16 kHz, in [-1, 1)."""


def timestamp_us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    return (value - EPOCH) // timedelta(microseconds=1)


def run_audio_16k(run: pa.Table) -> np.ndarray:
    """Consecutive chunks of one session (seq order) as one 16 kHz signal."""
    encoding = run.column("encoding")[0].as_py()
    rate = int(run.column("sample_rate")[0].as_py())
    return chunks_to_16k(run.column("pcm"), encoding, rate)


def _first_seq_reaching(chunks: pa.Table, first_seq: int, target_us: int) -> int:
    """The earliest seq to decode so the audio starts at or before ``target_us``.

    Walks back from ``first_seq`` over consecutive chunks of ``chunks`` (one session); stops at
    a gap or at the session's first chunk (the gateway's pre-roll stops there too).
    """
    earlier = chunks.filter(pc.less(chunks.column("seq"), first_seq)).sort_by(
        [("seq", "descending")]
    )
    start = first_seq
    for seq, event_time in zip(
        earlier.column("seq").to_pylist(), earlier.column("event_time").to_pylist(), strict=True
    ):
        if seq != start - 1:
            break
        start = seq
        if timestamp_us(event_time) <= target_us:
            break
    return start


def event_segment(
    chunks: pa.Table,
    first_seq: int,
    last_seq: int,
    start_us: int,
    duration_s: float,
    *,
    classified: bool = False,
) -> np.ndarray:
    """The 16 kHz segment of one event from its session's chunks (any order, may hold more).

    ``classified``: the span the gateway's classifier heard instead
    (:func:`features.window.classified_span`: the pre-roll before the speech start, read from
    the chunks before ``first_seq``, and the tail after its end) — what a training window must
    hold. Raises ValueError when a chunk of ``first_seq..last_seq`` is missing from ``chunks``.
    """
    seqs = chunks.column("seq")
    expected = last_seq - first_seq + 1
    present = pc.sum(
        pc.and_(pc.greater_equal(seqs, first_seq), pc.less_equal(seqs, last_seq))
    ).as_py()
    if (present or 0) < expected:
        raise ValueError(
            f"chunks {first_seq}..{last_seq} needed, {present or 0} of {expected} in bronze"
        )
    first = first_seq
    if classified:
        pre_roll_us = UTTERANCE_PRE_ROLL_MS * 1000
        first = _first_seq_reaching(chunks, first_seq, start_us - pre_roll_us)
    in_range = chunks.filter(
        pc.and_(pc.greater_equal(seqs, first), pc.less_equal(seqs, last_seq))
    ).sort_by("seq")
    audio = run_audio_16k(in_range)
    first_chunk_us = timestamp_us(in_range.column("event_time")[0].as_py())
    offset = max(0, round((start_us - first_chunk_us) * SAMPLE_RATE_HZ / US_PER_S))
    end = offset + max(1, round(duration_s * SAMPLE_RATE_HZ))
    if classified:
        offset, end = classified_span(offset, end)
    return audio[offset:end]


def event_segments(
    events: pa.Table, chunks: pa.Table, *, classified: bool = False
) -> Iterator[EventAudio]:
    """Every event's audio, session by session (``chunks`` holds those sessions' chunks).

    ``classified``: each event's classified span (see :func:`event_segment`). Events whose
    chunks are not all in ``chunks`` are left out (the caller counts them).
    """
    if events.num_rows == 0:
        return
    present = set(chunks.column("session_id").unique().to_pylist())
    for session_id in sorted(set(events.column("session_id").to_pylist())):
        if session_id not in present:
            continue
        session_chunks = chunks.filter(pc.equal(chunks.column("session_id"), session_id))
        session_events = events.filter(pc.equal(events.column("session_id"), session_id))
        for row in session_events.to_pylist():
            try:
                audio = event_segment(
                    session_chunks,
                    row["first_seq"],
                    row["last_seq"],
                    timestamp_us(row["start_time"]),
                    row["duration_s"],
                    classified=classified,
                )
            except ValueError:
                continue  # a chunk of the range is not in bronze (yet)
            yield EventAudio(row["event_id"], audio)


def chunks_of_sessions(lake: Lake, events: pa.Table) -> pa.Table:
    """The bronze chunks of the events' sessions (bronze is partitioned by ingest date, so
    this reads by session, not by the events' dates)."""
    sessions = pa.array(sorted(set(events.column("session_id").to_pylist())), pa.string())
    return lake.read(
        AUDIO_CHUNKS, columns=CHUNK_COLUMNS, filter=pc.field("session_id").isin(sessions)
    )


def read_event_audio(
    lake: Lake, events: pa.Table, *, classified: bool = False
) -> Iterator[EventAudio]:
    """:func:`event_segments` of ``events`` (:data:`EVENT_COLUMNS` at least) from the lake."""
    if events.num_rows == 0:
        return iter(())
    return event_segments(events, chunks_of_sessions(lake, events), classified=classified)


def consecutive_runs(chunks: pa.Table) -> list[pa.Table]:
    """``chunks`` cut into runs of consecutive seqs of one session, each in seq order."""
    if chunks.num_rows == 0:
        return []
    ordered = chunks.sort_by([("session_id", "ascending"), ("seq", "ascending")])
    sessions = ordered.column("session_id").to_numpy(zero_copy_only=False)
    seqs = ordered.column("seq").to_numpy()
    new_run = np.ones(len(seqs), dtype=bool)
    new_run[1:] = (sessions[1:] != sessions[:-1]) | (seqs[1:] != seqs[:-1] + 1)
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], len(seqs))
    return [ordered.slice(start, end - start) for start, end in zip(starts, ends, strict=True)]
