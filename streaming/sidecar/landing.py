"""One micro-batch of spool records → lake rows, columnar over the whole batch.

The gateway decided (utterances, every ``Results`` it sent, session totals); the sidecar only
lands those decisions beside the audio. Nothing here runs a VAD or a model, and nothing loops
over sessions in Python: every step is a pyarrow/numpy pass over all records of the batch.

- **chunks** → dedup against the batch and the carried key state, then ``bronze.audio_chunks``.
  A *duplicate* is the same stream's same seq with the same bytes (CRC-32 and length); the
  same key with other bytes is a *conflict* and goes to ``bronze.dead_letters`` with the
  reason — never dropped silently, never landed over the original. The bytes compared are
  the ones the client sent (:func:`client_bytes`): a compressed chunk resent after a gateway
  restart is decoded by a fresh decoder, whose PCM may differ from the first one's, yet it
  is the same chunk.
- **utterance** records → ``silver.audio_events`` (one per utterance, with its final result),
  levels measured over the chunks it spans (:mod:`streaming.sidecar.levels`).
- **result** and **utterance** records → ``gold.predictions`` (one row per ``Results`` sent).
- every kind → a per-session *delta* for ``silver.sessions`` (summed at commit time).

What one batch hands to the next (the *carry*, two small tables): the keys and digests of the
chunks landed within :attr:`LandingParams.dedup_horizon_s` (so a re-sent chunk is recognised),
and the per-chunk level statistics of audio no utterance has covered yet (an utterance's record
is spooled after its audio, possibly in a later batch).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from features import FEATURE_VERSION
from features.pcm import BYTES_PER_SAMPLE, SAMPLE_RATE_HZ
from lake_schemas.tables import (
    AUDIO_CHUNKS,
    AUDIO_EVENTS,
    LIVE_RUN_ID,
    PREDICTIONS,
    ROLE_CHAMPION,
    ROLE_SHADOW,
    TIMESTAMP,
)
from streaming.sidecar.levels import STATS_SCHEMA, chunk_stats, utterance_levels
from streaming.spool import KIND_CHUNK, KIND_RESULT, KIND_SESSION_END, KIND_UTTERANCE

US_PER_S = 1_000_000
CONFLICT_REASON = "conflicting payload: seq already landed for this session with other bytes"

KEYS_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("digest", pa.int64(), nullable=False),
        pa.field("received_us", pa.int64(), nullable=False),
    ]
)
"""Carried dedup state: one row per recently landed chunk (CRC-32 | byte length << 32)."""

SESSION_DELTA_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("encoding", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("started_at", TIMESTAMP),
        pa.field("ended_at", TIMESTAMP),
        pa.field("chunks", pa.int64(), nullable=False),
        pa.field("dropped_chunks", pa.int64()),
        pa.field("audio_s", pa.float64(), nullable=False),
        pa.field("speech_s", pa.float64(), nullable=False),
        pa.field("events", pa.int64(), nullable=False),
    ]
)
"""What one batch adds to a session's row; summed into silver.sessions at commit time.
``dropped_chunks`` is null until the ``session_end`` record brings the gateway's total."""


@dataclass(frozen=True)
class LandingParams:
    """How long the carried state reaches back, on the data's clock (the batch's latest
    ``received_at``), so replays of old spool data behave as they did live."""

    dedup_horizon_s: float = 120.0
    """A chunk re-sent later than this after the original is not recognised as a duplicate
    (the gateway's resume window is 60 s by default)."""
    level_horizon_s: float = 30.0
    """Chunk statistics are kept this long for an utterance record still to come (an
    utterance lasts at most 10 s, and its record follows its audio within a second or so)."""


@dataclass
class Landed:
    """The batch's rows, table by table, and the carry for the next batch."""

    bronze: pa.Table
    events: pa.Table
    predictions: pa.Table
    sessions: pa.Table
    dead_letters: list[dict[str, object]]
    keys: pa.Table
    stats: pa.Table
    duplicates: int


def _us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.int64()), dtype=np.int64)


def _digests(pcm: pa.ChunkedArray) -> np.ndarray:
    """CRC-32 of each payload with its byte length in the high bits (one C call per chunk,
    over zero-copy slices of each Arrow chunk's data buffer: the column is never combined,
    which would copy the batch's audio)."""
    parts = [_chunk_digests(part) for part in pcm.chunks if len(part)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _chunk_digests(column: pa.Array) -> np.ndarray:
    if not pa.types.is_large_binary(column.type):
        column = column.cast(pa.large_binary())  # offsets widened; the data buffer is shared
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[
        column.offset : column.offset + len(column) + 1
    ]
    data = column.buffers()[2]
    view = memoryview(data) if data is not None else memoryview(b"")
    bounds = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    crc = np.fromiter((zlib.crc32(view[a:b]) for a, b in bounds), np.int64, len(column))
    return crc | (np.diff(offsets) << 32)


def client_bytes(chunks: pa.Table) -> pa.ChunkedArray:
    """What the client sent for each chunk: ``received`` where the stream was compressed,
    else ``pcm`` (raw PCM is stored once, in ``pcm``; see :data:`AUDIO_CHUNKS`). A batch of
    raw streams only hands ``pcm`` back as it is: coalescing would copy all of its audio."""
    received = chunks.column("received")
    if received.null_count == len(received):
        return chunks.column("pcm")
    return pc.coalesce(received, chunks.column("pcm"))


def _codes(*columns: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """Integer codes of session ids, consistent across the given columns."""
    chunks: list[pa.Array] = []
    sizes = []
    for column in columns:
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        chunks.append(array.cast(pa.string()))
        sizes.append(len(array))
    if not sum(sizes):
        return [np.zeros(0, dtype=np.int64) for _ in columns]
    encoded = pc.dictionary_encode(pa.concat_arrays(chunks))
    codes = np.asarray(encoded.indices, dtype=np.int64)
    return np.split(codes, np.cumsum(sizes)[:-1])


def classify_chunks(chunks: pa.Table, keys: pa.Table, digests: np.ndarray) -> np.ndarray:
    """Per chunk (in spool order): 0 fresh, 1 duplicate, 2 conflicting payload."""
    n = chunks.num_rows
    carried, batch = _codes(keys.column("session_id"), chunks.column("session_id"))
    code = np.concatenate([carried, batch])
    seq = np.concatenate([_np(keys.column("seq")), _np(chunks.column("seq"))])
    digest = np.concatenate([_np(keys.column("digest")), digests])
    position = np.concatenate([np.full(carried.size, -1), np.arange(n)])
    order = np.lexsort((position, seq, code))
    s_code, s_seq, s_digest = code[order], seq[order], digest[order]
    start = np.ones(order.size, dtype=bool)
    start[1:] = (s_code[1:] != s_code[:-1]) | (s_seq[1:] != s_seq[:-1])
    first = np.maximum.accumulate(np.where(start, np.arange(order.size), 0))
    status_sorted = np.where(start, 0, np.where(s_digest == s_digest[first], 1, 2))
    status = np.empty(order.size, dtype=np.int64)
    status[order] = status_sorted
    return status[carried.size :]


def _np(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column, dtype=np.int64)


def bronze_rows(chunks: pa.Table) -> pa.Table:
    """Chunk records → ``bronze.audio_chunks`` rows (num_samples, lineage, ingest date)."""
    width = pc.if_else(pc.equal(chunks.column("encoding"), "linear16"), 2, 1)
    num_samples = pc.cast(pc.divide(pc.binary_length(chunks.column("pcm")), width), pa.int32())
    present = set(chunks.schema.names)
    columns = {n: chunks.column(n) for n in AUDIO_CHUNKS.schema.names if n in present}
    columns["num_samples"] = num_samples
    columns["ingest_date"] = pc.cast(chunks.column("received_at"), pa.date32())
    return pa.table(
        {name: columns[name] for name in AUDIO_CHUNKS.schema.names}, schema=AUDIO_CHUNKS.schema
    )


def stats_rows(chunks: pa.Table) -> pa.Table:
    """Level statistics of fresh chunks (one vectorised pass per encoding)."""
    parts = []
    for encoding in pc.unique(chunks.column("encoding")).to_pylist():
        part = _where(chunks, pc.equal(chunks.column("encoding"), encoding))
        if encoding not in BYTES_PER_SAMPLE:
            continue
        stats = chunk_stats(part.column("pcm"), encoding)
        offsets = np.concatenate([[0], np.cumsum(stats["frame_counts"])]).astype(np.int32)
        frames = pa.ListArray.from_arrays(pa.array(offsets), pa.array(stats["frames"]))
        parts.append(
            pa.table(
                {
                    "session_id": part.column("session_id"),
                    "seq": part.column("seq"),
                    "received_us": pa.array(_us(part.column("received_at"))),
                    "event_us": pa.array(_us(part.column("event_time"))),
                    "sample_rate": part.column("sample_rate"),
                    "samples": pa.array(stats["samples"]),
                    "sumsq": pa.array(stats["sumsq"]),
                    "peak": pa.array(stats["peak"]),
                    "clipped": pa.array(stats["clipped"]),
                    "frames": frames,
                },
                schema=STATS_SCHEMA,
            )
        )
    return pa.concat_tables(parts) if parts else STATS_SCHEMA.empty_table()


def event_ids(session_id: pa.ChunkedArray, utterance: pa.ChunkedArray) -> pa.ChunkedArray:
    """``<session_id>/u<utterance>``: deterministic, so a replayed batch lands the same ids."""
    return pc.binary_join_element_wise(
        pc.cast(session_id, pa.string()), pc.cast(utterance, pa.string()), "/u"
    )


def _stream_span(decisions: pa.Table) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(start time, end time, duration s) of decisions from their stream-clock samples."""
    start_us = _us(decisions.column("event_time"))
    samples = np.asarray(
        pc.subtract(decisions.column("end_sample"), decisions.column("start_sample")),
        dtype=np.int64,
    )
    samples = np.maximum(samples, 0)
    end_us = start_us + samples * US_PER_S // SAMPLE_RATE_HZ
    start = pa.array(start_us).cast(TIMESTAMP)
    return start, pa.array(end_us).cast(TIMESTAMP), samples / SAMPLE_RATE_HZ


def events_rows(utterances: pa.Table, stats: pa.Table) -> pa.Table:
    """Utterance records → ``silver.audio_events`` rows; ``stats`` sorted by session, seq."""
    if utterances.num_rows == 0:
        return AUDIO_EVENTS.schema.empty_table()
    stat_code, event_code = _codes(stats.column("session_id"), utterances.column("session_id"))
    key = (stat_code << 32) | _np(stats.column("seq"))
    order = np.argsort(key, kind="stable")
    stats, key = stats.take(pa.array(order)), key[order]
    first = (event_code << 32) | _np(utterances.column("first_seq"))
    last = (event_code << 32) | _np(utterances.column("last_seq"))
    lo = np.searchsorted(key, first, side="left")
    hi = np.searchsorted(key, last, side="right")
    start, end, duration = _stream_span(utterances)
    levels = utterance_levels(stats, lo, hi, _us(start), _us(end))
    return pa.table(
        {
            "event_id": event_ids(utterances.column("session_id"), utterances.column("utterance")),
            "session_id": utterances.column("session_id"),
            "device_id": utterances.column("device_id"),
            "start_time": start,
            "end_time": end,
            "duration_s": pa.array(duration),
            **{name: pa.array(values) for name, values in levels.items()},
            "speech_ratio": pc.fill_null(utterances.column("speech_ratio"), 0.0),
            "predicted_label": utterances.column("predicted_label"),
            "score": utterances.column("score"),
            "model_version": utterances.column("model_version"),
            "label": utterances.column("label"),
            "first_seq": utterances.column("first_seq"),
            "last_seq": utterances.column("last_seq"),
            "sample_rate": utterances.column("sample_rate"),
            "feature_version": pa.array([FEATURE_VERSION] * utterances.num_rows, pa.string()),
            "event_date": pc.cast(start, pa.date32()),
        },
        schema=AUDIO_EVENTS.schema,
    )


def prediction_rows(decisions: pa.Table, run_id: str = LIVE_RUN_ID) -> pa.Table:
    """Result and utterance records → ``gold.predictions`` rows (one per ``Results`` sent)."""
    if decisions.num_rows == 0:
        return PREDICTIONS.schema.empty_table()
    start, end, duration = _stream_span(decisions)
    session_id = decisions.column("session_id")
    n = decisions.num_rows
    role = pc.fill_null(decisions.column("role"), ROLE_CHAMPION)
    result_id = pc.binary_join_element_wise(
        pc.cast(session_id, pa.string()),
        pc.cast(decisions.column("result_index"), pa.string()),
        "/r",
    )
    # A shadow row scores the same result as the champion's: same index, its own key.
    shadow = pc.equal(role, ROLE_SHADOW)
    prediction_id = pc.if_else(
        shadow, pc.binary_join_element_wise(result_id, ROLE_SHADOW, "/"), result_id
    )
    return pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "prediction_id": prediction_id,
            "session_id": session_id,
            "device_id": decisions.column("device_id"),
            "utterance": decisions.column("utterance"),
            "event_id": event_ids(session_id, decisions.column("utterance")),
            "result_index": decisions.column("result_index"),
            "is_final": pc.fill_null(decisions.column("is_final"), False),
            "speech_final": pc.fill_null(decisions.column("speech_final"), False),
            "start_s": pc.divide(
                pc.cast(decisions.column("start_sample"), pa.float64()), float(SAMPLE_RATE_HZ)
            ),
            "duration_s": pa.array(duration),
            "start_time": start,
            "end_time": end,
            "predicted_label": decisions.column("predicted_label"),
            "score": decisions.column("score"),
            "top_k": decisions.column("top_k"),
            "model_version": decisions.column("model_version"),
            "role": role,
            "latency_ms": decisions.column("latency_ms"),
            "label": decisions.column("label"),
            "sent_at": decisions.column("received_at"),
            "prediction_date": pc.cast(start, pa.date32()),
        },
        schema=PREDICTIONS.schema,
    )


def _dropped_chunks(ends: pa.Table) -> pa.Array:
    """The gateway's ``dropped_chunks`` total of each session_end record (null if absent),
    parsed in one pass: the JSON totals joined into one newline-delimited document."""
    if ends.num_rows == 0:
        return pa.array([], pa.int64())
    texts = pc.fill_null(ends.column("meta_json"), "{}").combine_chunks()
    texts = pc.replace_substring(texts, "\n", " ")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(texts)]), texts), "\n")
    schema = pa.schema([pa.field("dropped_chunks", pa.int64())])
    try:
        parsed = pa_json.read_json(
            pa.BufferReader(joined[0].as_py().encode() + b"\n"),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
        if parsed.num_rows == ends.num_rows:
            return parsed.column("dropped_chunks").combine_chunks()
    except pa.ArrowInvalid:
        pass
    return pa.nulls(ends.num_rows, pa.int64())


def session_deltas(rows: pa.Table, bronze: pa.Table, events: pa.Table, ends: pa.Table) -> pa.Table:
    """Per session touched by the batch: what it adds to its ``silver.sessions`` row."""
    if rows.num_rows == 0:
        return SESSION_DELTA_SCHEMA.empty_table()
    info = rows.group_by("session_id", use_threads=False).aggregate(
        [("device_id", "first"), ("encoding", "first"), ("sample_rate", "first")]
    )
    info = info.rename_columns(["session_id", "device_id", "encoding", "sample_rate"])
    start_us = _us(bronze.column("event_time"))
    rate = np.asarray(bronze.column("sample_rate"), dtype=np.int64)
    samples = np.asarray(bronze.column("num_samples"), dtype=np.int64)
    audio = pa.table(
        {
            "session_id": bronze.column("session_id"),
            "start_us": start_us,
            "end_us": start_us + samples * US_PER_S // np.maximum(rate, 1),
            "audio_s": samples / np.maximum(rate, 1),
        }
    ).group_by("session_id", use_threads=False)
    audio = audio.aggregate(
        [("start_us", "min"), ("end_us", "max"), ("audio_s", "sum"), ("audio_s", "count")]
    ).rename_columns(["session_id", "a_start", "a_end", "audio_s", "chunks"])
    speech = (
        events.select(["session_id", "duration_s"])
        .group_by("session_id", use_threads=False)
        .aggregate([("duration_s", "sum"), ("duration_s", "count")])
        .rename_columns(["session_id", "speech_s", "events"])
    )
    ended = (
        pa.table(
            {
                "session_id": ends.column("session_id"),
                "end_us": _us(ends.column("event_time")),
                "dropped": _dropped_chunks(ends),
            }
        )
        .group_by("session_id", use_threads=False)
        .aggregate([("end_us", "max"), ("dropped", "max")])
        .rename_columns(["session_id", "e_end", "dropped_chunks"])
    )
    joined = info.join(audio, "session_id").join(speech, "session_id").join(ended, "session_id")
    a_start = pc.cast(joined.column("a_start"), TIMESTAMP)
    ends_at = pc.cast(
        pc.max_element_wise(joined.column("a_end"), joined.column("e_end")), TIMESTAMP
    )
    e_end = pc.cast(joined.column("e_end"), TIMESTAMP)
    deltas = pa.table(
        {
            "session_id": joined.column("session_id"),
            "device_id": joined.column("device_id"),
            "encoding": joined.column("encoding"),
            "sample_rate": joined.column("sample_rate"),
            "started_at": pc.coalesce(a_start, e_end),
            "ended_at": ends_at,
            "chunks": pc.fill_null(joined.column("chunks"), 0),
            "dropped_chunks": joined.column("dropped_chunks"),
            "audio_s": pc.fill_null(joined.column("audio_s"), 0.0),
            "speech_s": pc.fill_null(joined.column("speech_s"), 0.0),
            "events": pc.fill_null(joined.column("events"), 0),
        },
    )
    return deltas.cast(SESSION_DELTA_SCHEMA)


def land(
    rows: pa.Table,
    keys: pa.Table,
    stats: pa.Table,
    params: LandingParams | None = None,
    *,
    run_id: str = LIVE_RUN_ID,
) -> Landed:
    """Land one batch of validated spool records (see the module docstring); ``run_id``
    names the set of predictions (the gateway's live results, or a reprocess run)."""
    params = params or LandingParams()
    order = pc.sort_indices(rows, [("spool_segment", "ascending"), ("record_index", "ascending")])
    if not _is_identity(order):  # segments usually arrive in order: no copy of the audio then
        rows = rows.take(order)
    kind = rows.column("kind")
    chunks = _where(rows, pc.equal(kind, KIND_CHUNK))
    decisions = rows.filter(pc.is_in(kind, pa.array([KIND_RESULT, KIND_UTTERANCE])))
    ends = rows.filter(pc.equal(kind, KIND_SESSION_END))
    received = [int(v) for v in (pc.max(_us_arr(rows)).as_py(),) if v is not None]
    received += [int(v) for v in (pc.max(keys.column("received_us")).as_py(),) if v is not None]
    watermark_us = max(received, default=0)

    digests = _digests(client_bytes(chunks))
    status = classify_chunks(chunks, keys, digests)
    fresh = _where(chunks, pa.array(status == 0))
    conflicts = chunks.filter(pa.array(status == 2))
    dead = [
        {**row, "source": row.pop("spool_segment")} | {"reason": CONFLICT_REASON}
        for row in conflicts.select(["spool_segment", "record_index", "session_id", "seq"])
        .append_column("payload", client_bytes(conflicts))
        .to_pylist()
    ]
    bronze = bronze_rows(fresh)
    new_stats = pa.concat_tables([stats, stats_rows(fresh)])
    utterances = decisions.filter(pc.equal(decisions.column("kind"), KIND_UTTERANCE))
    events = events_rows(utterances, new_stats)

    ended = pc.unique(ends.column("session_id"))
    fresh_keys = pa.table(
        {
            "session_id": fresh.column("session_id"),
            "seq": fresh.column("seq"),
            "digest": pa.array(digests[status == 0]),
            "received_us": pa.array(_us(fresh.column("received_at"))),
        },
        schema=KEYS_SCHEMA,
    )
    # Keys outlive their session's end: under ``gateway --workers N`` a chunk sent again after
    # a resume on another worker may be stored there too, and that worker's segment can land
    # after the session_end (a crashed worker's open segment is sealed when it restarts).
    next_keys = _prune(
        pa.concat_tables([keys, fresh_keys]), None, watermark_us, params.dedup_horizon_s
    )
    next_stats = _prune(new_stats, ended, watermark_us, params.level_horizon_s)
    next_stats = _drop_covered(next_stats, utterances)
    return Landed(
        bronze=bronze,
        events=events,
        predictions=prediction_rows(decisions, run_id),
        sessions=session_deltas(rows, bronze, events, ends),
        dead_letters=dead,
        keys=next_keys,
        stats=next_stats,
        duplicates=int((status == 1).sum()),
    )


def _is_identity(order: pa.Array) -> bool:
    """Whether sort indices leave the rows where they are (checked without copying them)."""
    indices = np.asarray(order)
    return bool(np.array_equal(indices, np.arange(indices.size)))


def _where(table: pa.Table, mask: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``table.filter(mask)``, without copying the audio where that can be avoided.

    Filtering copies every column, the batch's audio included. The table itself is handed
    back when every row is kept; and a binary column whose dropped rows are all empty (the
    audio columns when decision records are dropped from a batch's records) keeps its data
    buffer: only its offsets are filtered (:func:`_filter_sharing_data`).
    """
    if pc.all(mask).as_py() is True:
        return table
    mask = mask if isinstance(mask, pa.ChunkedArray) else pa.chunked_array([mask])
    columns = [
        _filter_sharing_data(column, mask)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
        else column.filter(mask)
        for column in table.columns
    ]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _filter_sharing_data(column: pa.ChunkedArray, mask: pa.ChunkedArray) -> pa.ChunkedArray:
    """A binary column filtered by offsets alone when every dropped value is empty: the kept
    values then lie back to back in each chunk's data buffer as they are. Otherwise a plain
    filter."""
    keep = mask.fill_null(False).combine_chunks()  # one bit per row: cheap to combine
    dropped = column.filter(pc.invert(keep))
    if pc.max(pc.binary_length(dropped)).as_py() not in (None, 0):
        return column.filter(mask)
    parts, at = [], 0
    for chunk in column.chunks:
        parts.append(_offsets_filter(chunk, keep.slice(at, len(chunk))))
        at += len(chunk)
    return pa.chunked_array(parts, type=column.type)


def _offsets_filter(array: pa.Array, mask: pa.Array) -> pa.Array:
    keep = np.asarray(mask.fill_null(False), dtype=bool)
    width = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[
        array.offset : array.offset + len(array) + 1
    ]
    kept = np.append(offsets[:-1][keep], offsets[-1])
    validity = None
    if array.null_count:
        valid = pc.is_valid(array).filter(pa.array(keep))
        validity = valid.buffers()[1]
    return pa.Array.from_buffers(
        array.type, int(keep.sum()), [validity, pa.py_buffer(kept), array.buffers()[2]]
    )


def _us_arr(rows: pa.Table) -> pa.Array:
    return pc.cast(rows.column("received_at"), pa.int64())


def _prune(
    table: pa.Table, ended: pa.Array | None, watermark_us: int, horizon_s: float
) -> pa.Table:
    """Rows received within ``horizon_s`` of the watermark (of sessions not ``ended``)."""
    recent = pc.greater_equal(table.column("received_us"), watermark_us - int(horizon_s * 1e6))
    if ended is None:
        return table.filter(recent)
    open_session = pc.invert(pc.is_in(table.column("session_id"), ended))
    return table.filter(pc.and_(recent, open_session))


def _drop_covered(stats: pa.Table, utterances: pa.Table) -> pa.Table:
    """Statistics of chunks an utterance of this batch already spanned are done with."""
    if utterances.num_rows == 0 or stats.num_rows == 0:
        return stats
    covered = utterances.group_by("session_id", use_threads=False).aggregate([("last_seq", "max")])
    # Join on the keys only (list columns cannot ride through a join), then take the rows.
    keyed = pa.table(
        {
            "session_id": stats.column("session_id"),
            "seq": stats.column("seq"),
            "row": pa.array(np.arange(stats.num_rows)),
        }
    )
    joined = keyed.join(covered, "session_id", join_type="left outer")
    keep = pc.or_kleene(
        pc.is_null(joined.column("last_seq_max")),
        pc.greater_equal(joined.column("seq"), joined.column("last_seq_max")),
    )
    rows = np.sort(np.asarray(joined.filter(keep).column("row"), dtype=np.int64))
    return stats.take(pa.array(rows))
