"""The carry between micro-batches: open sessions' state as two Arrow tables on disk.

Batch N's carry (written before any of its commits) is batch N+1's input, so a replay of
N+1 sees exactly the state the first attempt saw and produces the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from streaming.sidecar.enrich import CHUNK_SCHEMA, SessionCarry

CARRY_SESSIONS_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("encoding", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("landed_lo", pa.list_(pa.int64()), nullable=False),
        pa.field("landed_hi", pa.list_(pa.int64()), nullable=False),
        pa.field("last_received_us", pa.int64(), nullable=False),
        pa.field("trim_samples", pa.int64(), nullable=False),
    ]
)


def carries_to_tables(carries: Iterable[SessionCarry]) -> tuple[pa.Table, pa.Table]:
    """(session states, pending chunks of all sessions) for storage."""
    carries = sorted(carries, key=lambda c: c.session_id)
    states = pa.Table.from_pylist(
        [
            {
                "session_id": c.session_id,
                "device_id": c.device_id,
                "encoding": c.encoding,
                "sample_rate": c.sample_rate,
                "landed_lo": c.landed_lo,
                "landed_hi": c.landed_hi,
                "last_received_us": c.last_received_us,
                "trim_samples": c.trim_samples,
            }
            for c in carries
        ],
        schema=CARRY_SESSIONS_SCHEMA,
    )
    pending = [c.pending for c in carries if c.pending.num_rows]
    chunks = pa.concat_tables(pending) if pending else CHUNK_SCHEMA.empty_table()
    return states, chunks


def tables_to_carries(states: pa.Table, chunks: pa.Table) -> list[SessionCarry]:
    """The stored tables back into one :class:`SessionCarry` per session.

    One sort, then zero-copy slices: a ``take`` per session would re-gather the whole
    (chunked) table once per session.
    """
    chunks = chunks.sort_by([("session_id", "ascending"), ("seq", "ascending")]).combine_chunks()
    spans: dict[str, tuple[int, int]] = {}
    for session_id, rows in split_by_session_sorted(chunks):
        spans[session_id] = rows
    carries = []
    for row in states.to_pylist():
        start, length = spans.get(row["session_id"], (0, 0))
        carries.append(SessionCarry(pending=chunks.slice(start, length), **row))
    return carries


def split_by_session_sorted(chunks: pa.Table) -> list[tuple[str, tuple[int, int]]]:
    """(session_id, (offset, length)) of each session's run in a table sorted by session."""
    if chunks.num_rows == 0:
        return []
    ids = chunks.column("session_id").to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [ids.size]])
    return [(str(ids[a]), (int(a), int(b - a))) for a, b in zip(starts, ends, strict=True)]
