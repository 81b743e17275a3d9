"""Per-session landing logic: dedup, audio assembly, speech segments and their measurements.

Pure numpy/pyarrow over whole tables; the Beam transform (:mod:`streaming.sidecar.pipeline`) only
groups records per session and calls in here, so the same code runs under the local
micro-batch driver and on a cluster runner.

The work for one micro-batch of one session:

1. :func:`prepare_session` — drop chunks already landed (by the session's landed seq ranges
   from earlier batches) or repeated within the batch, make the bronze rows, and assemble the
   audio still to analyse: the *pending* tail carried over from the previous batch followed by
   the new chunks, decoded and resampled to 16 kHz.
2. :func:`streaming.vad.speech_probabilities_many` — one VAD pass batched across sessions.
3. :func:`finish_session` — find speech segments (the gateway's endpointing idea: hysteresis
   on the speech probability, a segment ends after ``endpointing_ms`` of silence), measure
   each closed one with :mod:`features` (levels, SNR, speech ratio, the model window), and
   keep what is still open as the carry for the next batch. A segment that would straddle two
   batches is therefore landed once, whole, by the batch in which it closes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import FEATURE_VERSION, fit_window, levels, snr_db
from features.pcm import BYTES_PER_SAMPLE, MULAW_TO_PCM16, SAMPLE_RATE_HZ, resample
from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS
from streaming.segments import (
    VAD_WINDOW_SAMPLES,
    SegmenterParams,
    add_to_ranges,
    find_segments,
    seqs_in_ranges,
)
from streaming.sidecar.arrow_ipc import ipc_bytes, table_from_ipc
from streaming.spool import KIND_CHUNK, KIND_SESSION_END, SPOOL_SCHEMA, TIMESTAMP_US_UTC

US_PER_S = 1_000_000

CHUNK_SCHEMA = pa.schema(
    [
        *SPOOL_SCHEMA,
        pa.field("spool_segment", pa.string(), nullable=False),
        pa.field("record_index", pa.int64(), nullable=False),
    ]
)
"""Spool records after decoding: each knows the segment and position it came from."""

SESSION_DELTA_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("encoding", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("started_at", TIMESTAMP_US_UTC),
        pa.field("ended_at", TIMESTAMP_US_UTC),
        pa.field("chunks", pa.int64(), nullable=False),
        pa.field("dropped_chunks", pa.int64()),
        pa.field("audio_s", pa.float64(), nullable=False),
        pa.field("speech_s", pa.float64(), nullable=False),
        pa.field("events", pa.int64(), nullable=False),
    ]
)
"""What one batch adds to a session's row; summed into silver.sessions at commit time.

``dropped_chunks`` is null until the session's ``session_end`` record brings the gateway's
total; started/ended are null when the batch landed no chunk of the session.
"""


@dataclass
class SessionCarry:
    """What one open session hands to the next batch (stored by the driver between batches)."""

    session_id: str
    device_id: str
    encoding: str
    sample_rate: int
    landed_lo: list[int]
    landed_hi: list[int]
    """Inclusive seq ranges already in bronze: a re-sent chunk in them is not landed again."""
    last_received_us: int
    trim_samples: int
    """Samples (at the session's rate) of the first pending chunk already analysed."""
    pending: pa.Table
    """Chunks (:data:`CHUNK_SCHEMA`) of a segment that is still open, already in bronze."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickle ``pending`` as IPC bytes: compact even when it is a slice of a larger table.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["pending"] = ipc_bytes(self.pending)
        return (_carry_from_state, (fields,))


def _carry_from_state(fields: dict[str, Any]) -> SessionCarry:
    return SessionCarry(**{**fields, "pending": table_from_ipc(fields["pending"])})


@dataclass
class SessionWork:
    """One session's batch between :func:`prepare_session` and :func:`finish_session`."""

    session_id: str
    device_id: str
    encoding: str
    sample_rate: int
    bronze: pa.Table
    duplicates: int
    chunks: pa.Table
    """Pending + new chunks in seq order: the audio below, chunk by chunk."""
    audio_16k: np.ndarray
    chunk_start_16k: np.ndarray
    """Where each chunk starts in ``audio_16k`` (the first may be negative: trimmed)."""
    landed_lo: list[int]
    landed_hi: list[int]
    last_received_us: int
    new_chunks: int
    ended: bool = False
    end_time_us: int | None = None
    dropped_chunks: int | None = None
    dead_letters: list[dict[str, object]] = field(default_factory=list)


# --------------------------------------------------------------------------- decoding
def decode_chunks(chunks: pa.Table, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """All chunks' audio as one int16 array, and each chunk's sample count (vectorised)."""
    pcm = chunks.column("pcm").combine_chunks()
    if len(pcm) == 0:
        return np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int64)
    offsets = np.frombuffer(pcm.buffers()[1], dtype=np.int32)[
        pcm.offset : pcm.offset + len(pcm) + 1
    ]
    data = np.frombuffer(pcm.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets).astype(np.int64) // BYTES_PER_SAMPLE[encoding]
    if encoding == "linear16":
        return data.view("<i2"), lengths
    return MULAW_TO_PCM16[data], lengths


def event_id(session_id: str, first_seq: int, offset_samples: int) -> str:
    """Deterministic id: the same segment of the same session always gets the same id."""
    key = f"{session_id}\x1f{first_seq}\x1f{offset_samples}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def _ts_us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.int64()), dtype=np.int64)


# --------------------------------------------------------------------------- step 1
def prepare_session(
    session_id: str,
    new_rows: list[pa.Table],
    carry: SessionCarry | None,
) -> SessionWork | None:
    """Dedup and assemble one session's audio for this batch (see the module docstring)."""
    # Spool order (segment, then position) decides which copy of a repeated chunk wins. Each
    # part comes from one segment, already in record order: ordering the parts is enough.
    tables = sorted(
        (t for t in new_rows if t.num_rows),
        key=lambda t: (t.column("spool_segment")[0].as_py(), t.column("record_index")[0].as_py()),
    )
    rows = pa.concat_tables(tables) if tables else CHUNK_SCHEMA.empty_table()
    kinds = rows.column("kind")
    ends = rows.filter(pc.equal(kinds, KIND_SESSION_END))
    chunks = rows.filter(pc.equal(kinds, KIND_CHUNK))
    if carry is None and chunks.num_rows == 0 and ends.num_rows == 0:
        return None
    reference = carry.pending if carry is not None and carry.pending.num_rows else None
    if carry is not None:
        device_id, encoding, sample_rate = carry.device_id, carry.encoding, carry.sample_rate
    else:
        first = chunks if chunks.num_rows else ends
        device_id = first.column("device_id")[0].as_py()
        encoding = first.column("encoding")[0].as_py()
        sample_rate = int(first.column("sample_rate")[0].as_py())
    dead: list[dict[str, object]] = []
    if chunks.num_rows:
        same_format = pc.and_(
            pc.equal(chunks.column("encoding"), encoding),
            pc.equal(chunks.column("sample_rate"), sample_rate),
        )
        changed = chunks.filter(pc.invert(same_format))
        for row in changed.select(["spool_segment", "record_index", "seq", "pcm"]).to_pylist():
            dead.append(
                {
                    **row,
                    "session_id": session_id,
                    "reason": "format changed mid-session "
                    f"(session is {encoding} at {sample_rate} Hz)",
                }
            )
        chunks = chunks.filter(same_format)
    landed_lo = list(carry.landed_lo) if carry else []
    landed_hi = list(carry.landed_hi) if carry else []
    seqs = np.asarray(chunks.column("seq"), dtype=np.int64)
    _, first_index = np.unique(seqs, return_index=True)
    keep = np.zeros(seqs.size, dtype=bool)
    keep[first_index] = True
    keep &= ~seqs_in_ranges(seqs, landed_lo, landed_hi)
    duplicates = int(seqs.size - keep.sum())
    fresh = chunks.filter(pa.array(keep)) if duplicates else chunks
    fresh = fresh.sort_by("seq")
    # A chunk older than audio already analysed (it arrived after a later one was landed)
    # still lands in bronze, but the segments before it are settled: it is not re-analysed.
    analysed_up_to = landed_hi[-1] if landed_hi else None
    audible = fresh
    if analysed_up_to is not None and fresh.num_rows:
        audible = fresh.filter(pc.greater(fresh.column("seq"), analysed_up_to))
    landed_lo, landed_hi = add_to_ranges(landed_lo, landed_hi, seqs[keep])

    received = [carry.last_received_us] if carry else []
    if rows.num_rows:
        received.append(int(_ts_us(rows.column("received_at")).max()))
    work_chunks = audible if reference is None else pa.concat_tables([reference, audible])
    samples, lengths = decode_chunks(work_chunks, encoding)
    trim = carry.trim_samples if reference is not None and carry is not None else 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) - trim if lengths.size else lengths
    audio = samples[trim:].astype(np.float32) / 32768.0
    if sample_rate != SAMPLE_RATE_HZ:
        audio = resample(audio, sample_rate, SAMPLE_RATE_HZ)
        starts = np.round(starts * (SAMPLE_RATE_HZ / sample_rate)).astype(np.int64)

    work = SessionWork(
        session_id=session_id,
        device_id=device_id,
        encoding=encoding,
        sample_rate=sample_rate,
        bronze=bronze_rows(fresh, encoding),
        duplicates=duplicates,
        chunks=work_chunks,
        audio_16k=audio,
        chunk_start_16k=starts.astype(np.int64),
        landed_lo=landed_lo,
        landed_hi=landed_hi,
        last_received_us=max(received) if received else 0,
        new_chunks=fresh.num_rows,
        dead_letters=dead,
    )
    if ends.num_rows:
        work.ended = True
        work.end_time_us = int(_ts_us(ends.column("event_time")).max())
        work.dropped_chunks = _dropped_from_meta(ends.column("meta_json")[0].as_py())
    return work


def _dropped_from_meta(meta_json: str | None) -> int | None:
    if not meta_json:
        return None
    try:
        meta = json.loads(meta_json)
        return int(meta.get("dropped_chunks", 0))
    except (ValueError, TypeError, AttributeError):
        return None


def bronze_rows(chunks: pa.Table, encoding: str) -> pa.Table:
    """Chunk records → ``bronze.audio_chunks`` rows (num_samples, lineage, ingest date)."""
    lengths = pc.binary_length(chunks.column("pcm"))
    num_samples = pc.cast(pc.divide(lengths, BYTES_PER_SAMPLE[encoding]), pa.int32())
    ingest_date = pc.cast(chunks.column("received_at"), pa.date32())
    columns = {
        "session_id": chunks.column("session_id"),
        "device_id": chunks.column("device_id"),
        "seq": chunks.column("seq"),
        "event_time": chunks.column("event_time"),
        "received_at": chunks.column("received_at"),
        "sample_rate": chunks.column("sample_rate"),
        "encoding": chunks.column("encoding"),
        "num_samples": num_samples,
        "pcm": chunks.column("pcm"),
        "label": chunks.column("label"),
        "spool_segment": chunks.column("spool_segment"),
        "ingest_date": ingest_date,
    }
    return pa.table(columns, schema=AUDIO_CHUNKS.schema)


# --------------------------------------------------------------------------- step 3
@dataclass
class SessionResult:
    """What one session's batch produced (events still without predictions)."""

    events: list[dict[str, object]]
    windows: list[np.ndarray]
    delta: dict[str, object]
    carry: SessionCarry | None


def _time_at(work: SessionWork, sample: int) -> tuple[int, int, int]:
    """(chunk index, event time µs, offset in the chunk in 16 kHz samples) of a sample."""
    index = max(0, int(np.searchsorted(work.chunk_start_16k, sample, side="right")) - 1)
    offset = sample - int(work.chunk_start_16k[index])
    chunk_time = int(_ts_us(work.chunks.column("event_time").slice(index, 1))[0])
    return index, chunk_time + offset * US_PER_S // SAMPLE_RATE_HZ, offset


def finish_session(
    work: SessionWork, probs: np.ndarray, params: SegmenterParams, watermark_us: int
) -> SessionResult:
    """Segments, measurements, the session's delta row and its carry (see the module doc)."""
    n_audio = work.audio_16k.size
    closed, open_start = find_segments(probs, params)
    idle_s = max(0, watermark_us - work.last_received_us) / US_PER_S
    flush = (
        params.flush_all or work.ended or (work.new_chunks == 0 and idle_s >= params.idle_flush_s)
    )
    if flush and open_start is not None:
        # Close what is open at the end of the audio (only a real segment, not a candidate).
        tail = probs[open_start:]
        speech = np.flatnonzero(tail >= params.threshold_off)
        if speech.size and speech[-1] + 1 >= params.windows(params.min_speech_ms):
            closed.append((open_start, open_start + int(speech[-1]) + 1))
        open_start = None

    labels = work.chunks.column("label").to_pylist()
    seqs = work.chunks.column("seq").to_pylist()
    events: list[dict[str, object]] = []
    windows: list[np.ndarray] = []
    speech_s = 0.0
    for w_start, w_end in closed:
        s0 = w_start * VAD_WINDOW_SAMPLES
        s1 = min(w_end * VAD_WINDOW_SAMPLES, n_audio)
        if s1 <= s0:
            continue
        segment = work.audio_16k[s0:s1]
        first, start_us, offset = _time_at(work, s0)
        last, _, _ = _time_at(work, s1 - 1)
        level = levels(segment)
        duration_s = (s1 - s0) / SAMPLE_RATE_HZ
        speech_s += duration_s
        known = [lbl for lbl in labels[first : last + 1] if lbl is not None]
        events.append(
            {
                "event_id": event_id(work.session_id, seqs[first], offset),
                "session_id": work.session_id,
                "device_id": work.device_id,
                "start_time": start_us,
                "end_time": start_us + int(duration_s * US_PER_S),
                "duration_s": duration_s,
                "rms_dbfs": level.rms_dbfs,
                "peak_dbfs": level.peak_dbfs,
                "clipping_ratio": level.clipping_ratio,
                "snr_db": snr_db(segment),
                "speech_ratio": float(np.mean(probs[w_start:w_end] >= params.threshold_on)),
                "predicted_label": None,
                "score": None,
                "model_version": None,
                "label": Counter(known).most_common(1)[0][0] if known else None,
                "first_seq": seqs[first],
                "last_seq": seqs[last],
                "sample_rate": work.sample_rate,
                "feature_version": FEATURE_VERSION,
                "event_date": datetime.fromtimestamp(start_us / US_PER_S, UTC).date(),
            }
        )
        windows.append(fit_window(segment))

    delta = session_delta(work, speech_s, len(events))
    carry = _next_carry(work, closed, open_start, params, watermark_us, flush)
    return SessionResult(events, windows, delta, carry)


def session_delta(work: SessionWork, speech_s: float, n_events: int) -> dict[str, object]:
    bronze = work.bronze
    started = ended = None
    audio_s = 0.0
    if bronze.num_rows:
        times = _ts_us(bronze.column("event_time"))
        samples = np.asarray(bronze.column("num_samples"), dtype=np.int64)
        durations_us = samples * US_PER_S // work.sample_rate
        started = int(times.min())
        ended = int((times + durations_us).max())
        audio_s = float(samples.sum() / work.sample_rate)
    if work.end_time_us is not None:
        ended = max(ended or work.end_time_us, work.end_time_us)
        started = started if started is not None else work.end_time_us
    return {
        "session_id": work.session_id,
        "device_id": work.device_id,
        "encoding": work.encoding,
        "sample_rate": work.sample_rate,
        "started_at": started,
        "ended_at": ended,
        "chunks": bronze.num_rows,
        "dropped_chunks": work.dropped_chunks,
        "audio_s": audio_s,
        "speech_s": speech_s,
        "events": n_events,
    }


def _next_carry(
    work: SessionWork,
    closed: list[tuple[int, int]],
    open_start: int | None,
    params: SegmenterParams,
    watermark_us: int,
    flushed: bool,
) -> SessionCarry | None:
    if params.flush_all or work.ended:
        return None
    idle_s = max(0, watermark_us - work.last_received_us) / US_PER_S
    if idle_s >= params.session_timeout_s:
        return None
    n_audio = work.audio_16k.size
    empty = CHUNK_SCHEMA.empty_table()
    if flushed or work.chunks.num_rows == 0:
        pending, trim = empty, 0
    else:
        tail = params.carry_tail_ms * SAMPLE_RATE_HZ // 1000
        if open_start is not None:
            # Some audio before the open segment too: the VAD restarts on it and has warmed
            # up by the time the speech begins (whole windows, so the window grid holds).
            lead = params.windows(params.carry_tail_ms) * VAD_WINDOW_SAMPLES
            carry_from = max(0, open_start * VAD_WINDOW_SAMPLES - lead)
        else:
            carry_from = max(0, (n_audio - tail) // VAD_WINDOW_SAMPLES * VAD_WINDOW_SAMPLES)
        if closed:
            carry_from = max(carry_from, closed[-1][1] * VAD_WINDOW_SAMPLES)
        if carry_from >= n_audio:
            pending, trim = empty, 0
        else:
            index = max(0, int(np.searchsorted(work.chunk_start_16k, carry_from, "right")) - 1)
            offset_16k = carry_from - int(work.chunk_start_16k[index])
            trim = round(offset_16k * work.sample_rate / SAMPLE_RATE_HZ)
            pending = work.chunks.slice(index)  # pickled compactly: SessionCarry.__reduce__
    return SessionCarry(
        session_id=work.session_id,
        device_id=work.device_id,
        encoding=work.encoding,
        sample_rate=work.sample_rate,
        landed_lo=work.landed_lo,
        landed_hi=work.landed_hi,
        last_received_us=work.last_received_us,
        trim_samples=trim,
        pending=pending,
    )


def events_table(events: list[dict[str, object]]) -> pa.Table:
    """Event dicts → ``silver.audio_events`` rows."""
    return pa.Table.from_pylist(events, schema=AUDIO_EVENTS.schema)


def session_deltas_table(deltas: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(deltas, schema=SESSION_DELTA_SCHEMA)
