"""Spool records as Beam elements: decode, validate, split per session, dead letters.

Beam moves an element between stages by pickling it; with one element per 100-ms chunk its
per-element cost dominates (measured: 3–4× slower than plain Python). Elements here are whole
Arrow tables (a segment, or one session's rows) wrapped in :class:`ArrowRows`, whose pickle is
the Arrow IPC stream of exactly its rows (a plain ``pa.Table`` slice would pickle the whole
parent buffers), and every check is a vectorised mask over a column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.pcm import ENCODINGS, MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from lake_schemas.tables import DEAD_LETTERS
from streaming.sidecar.arrow_ipc import ipc_bytes, table_from_ipc
from streaming.spool import (
    KIND_CHUNK,
    KIND_RESULT,
    KIND_UTTERANCE,
    KINDS,
    SPOOL_SCHEMA,
    SpoolCorrupt,
    decode_segment,
)

CHUNK_SCHEMA = pa.schema(
    [
        *SPOOL_SCHEMA,
        pa.field("spool_segment", pa.string(), nullable=False),
        pa.field("record_index", pa.int64(), nullable=False),
    ]
)
"""Spool records after decoding: each knows the segment and position it came from."""

MAX_DEAD_PAYLOAD_BYTES = 1 << 20
"""A refused segment larger than this (1 MiB) is kept in the spool's quarantine folder only."""


def _rows_from_ipc(data: bytes) -> ArrowRows:
    return ArrowRows(table_from_ipc(data))


class ArrowRows:
    """A table as one Beam element; pickles as compact Arrow IPC (see the module docstring)."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (_rows_from_ipc, (ipc_bytes(self.table),))

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return f"ArrowRows({self.table.num_rows} rows)"


def dead_letter_rows(rows: list[dict[str, Any]], quarantined_at: datetime) -> pa.Table:
    """Dead-letter dicts (source, record_index, session_id, seq, reason, payload) → rows."""
    full = [
        {
            "source": row["source"],
            "record_index": row.get("record_index"),
            "session_id": row.get("session_id"),
            "seq": row.get("seq"),
            "reason": row["reason"],
            "quarantined_at": quarantined_at,
            "payload": row.get("payload"),
            "ingest_date": quarantined_at.astimezone(UTC).date(),
        }
        for row in rows
    ]
    return pa.Table.from_pylist(full, schema=DEAD_LETTERS.schema)


def decode(
    source: str, payload: bytes | pa.Buffer
) -> tuple[pa.Table | None, dict[str, Any] | None]:
    """A segment's bytes → its records with lineage columns, or a dead letter saying why not."""
    try:
        table = decode_segment(payload, source=source)
    except SpoolCorrupt as exc:
        keep = bytes(payload) if len(payload) <= MAX_DEAD_PAYLOAD_BYTES else None
        return None, {"source": source, "reason": f"unreadable segment: {exc}", "payload": keep}
    n = table.num_rows
    table = table.append_column(
        CHUNK_SCHEMA.field("spool_segment"), pa.array([source] * n, pa.string())
    ).append_column(CHUNK_SCHEMA.field("record_index"), pa.array(np.arange(n), pa.int64()))
    return table, None


_REQUIRED = ("kind", "session_id", "device_id", "seq", "event_time", "received_at")


def validate(table: pa.Table) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Split records into the valid ones and dead letters with the reason (vectorised)."""
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}

    def refuse(mask: np.ndarray, reason: Any) -> None:
        new = mask & ~bad
        for index in np.flatnonzero(new):
            reasons[int(index)] = reason(int(index)) if callable(reason) else reason
        bad[new] = True

    for column in (*_REQUIRED, "sample_rate", "encoding", "pcm"):
        nulls = np.asarray(pc.is_null(table.column(column)), dtype=bool)
        if nulls.any():
            refuse(nulls, f"missing {column}")
    kind = table.column("kind")
    is_chunk = np.asarray(pc.fill_null(pc.equal(kind, KIND_CHUNK), False), dtype=bool)
    known_kind = np.asarray(pc.fill_null(pc.is_in(kind, pa.array(KINDS)), False), dtype=bool)
    kinds = kind.to_pylist() if not known_kind.all() else None
    refuse(~known_kind, lambda i: f"unknown kind {kinds[i]!r}" if kinds else "bad kind")
    is_decision = np.asarray(
        pc.fill_null(pc.is_in(kind, pa.array([KIND_RESULT, KIND_UTTERANCE])), False), bool
    )
    is_utterance = np.asarray(pc.fill_null(pc.equal(kind, KIND_UTTERANCE), False), bool)
    for column in ("utterance", "result_index", "start_sample", "end_sample"):
        refuse(
            is_decision & np.asarray(pc.is_null(table.column(column)), bool),
            f"decision without {column}",
        )
    for column in ("first_seq", "last_seq"):
        refuse(
            is_utterance & np.asarray(pc.is_null(table.column(column)), bool),
            f"utterance without {column}",
        )
    empty_id = np.asarray(pc.fill_null(pc.equal(table.column("session_id"), ""), True), bool)
    refuse(empty_id, "empty session_id")
    encoding = table.column("encoding")
    known = np.asarray(pc.fill_null(pc.is_in(encoding, pa.array(ENCODINGS)), False), bool)
    if not known.all():
        names = encoding.to_pylist()
        refuse(
            ~known,
            lambda i: f"unknown encoding {names[i]!r}; use one of {', '.join(ENCODINGS)}",
        )
    rate = np.asarray(pc.fill_null(table.column("sample_rate"), 0), dtype=np.int64)
    refuse(
        (rate < MIN_SAMPLE_RATE_HZ) | (rate > MAX_SAMPLE_RATE_HZ),
        lambda i: f"sample_rate={rate[i]} outside {MIN_SAMPLE_RATE_HZ}–{MAX_SAMPLE_RATE_HZ} Hz",
    )
    seq = np.asarray(pc.fill_null(table.column("seq"), -1), dtype=np.int64)
    refuse(is_chunk & (seq < 0), "negative seq for a chunk")
    length = np.asarray(pc.fill_null(pc.binary_length(table.column("pcm")), 0), dtype=np.int64)
    # A compressed stream's frame may complete no PCM (a header) and its decoder's last PCM
    # has no frame of its own: a chunk is empty only when it carries neither.
    sent = np.asarray(pc.fill_null(pc.binary_length(table.column("received")), 0), np.int64)
    refuse(is_chunk & (length == 0) & (sent <= 0), "zero-length pcm")
    is_linear16 = np.asarray(pc.fill_null(pc.equal(encoding, "linear16"), False), dtype=bool)
    refuse(
        is_chunk & is_linear16 & (length % 2 == 1),
        "linear16 pcm with an odd byte count (not whole 16-bit samples)",
    )
    if not bad.any():
        return table, []
    refused = table.filter(pa.array(bad))
    lineage = refused.select(["spool_segment", "record_index", "session_id", "seq", "pcm"])
    dead = []
    for index, row in zip(np.flatnonzero(bad), lineage.to_pylist(), strict=True):
        dead.append(
            {
                "source": row["spool_segment"],
                "record_index": row["record_index"],
                "session_id": row["session_id"],
                "seq": row["seq"],
                "reason": reasons[int(index)],
                "payload": row["pcm"],
            }
        )
    return table.filter(pa.array(~bad)), dead


def split_by_session(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """One compact table per session (rows in spool order), vectorised with one sort."""
    if table.num_rows == 0:
        return []
    encoded = pc.dictionary_encode(table.column("session_id")).combine_chunks()
    codes = np.asarray(encoded.indices, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [codes.size]])
    taken = table.take(pa.array(order))
    names = encoded.dictionary.to_pylist()
    return [
        (names[sorted_codes[a]], taken.slice(a, b - a)) for a, b in zip(starts, ends, strict=True)
    ]


def min_event_time_s(table: pa.Table) -> float:
    """Earliest event time in seconds since the epoch (the element's Beam timestamp)."""
    earliest = pc.min(table.column("event_time")).as_py()
    return earliest.timestamp() if earliest is not None else 0.0


def max_received_us(table: pa.Table) -> int:
    """Latest ``received_at`` in microseconds since the epoch (the batch's data clock)."""
    latest = pc.max(pc.cast(table.column("received_at"), pa.int64())).as_py()
    return int(latest) if latest is not None else 0
