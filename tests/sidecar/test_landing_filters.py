"""Dropping a batch's decision records keeps the audio where it is, and is still a filter."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streaming.sidecar.landing import _where


def _records(kind: pa.DataType) -> pa.Table:
    """Two segments' records: chunks with audio, decisions with none (null or empty)."""
    return pa.Table.from_batches(
        [
            pa.record_batch(
                {"kind": ["chunk", "result", "chunk", "result"], "pcm": [b"ab", None, b"cd", b""]},
                schema=pa.schema([("kind", pa.string()), ("pcm", kind)]),
            ),
            pa.record_batch(
                {"kind": ["utterance", "chunk"], "pcm": [None, b"xyz"]},
                schema=pa.schema([("kind", pa.string()), ("pcm", kind)]),
            ),
        ]
    ).slice(1)  # arrays that start inside their buffers


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_dropping_empty_values_shares_the_data_buffer(kind: pa.DataType) -> None:
    rows = _records(kind)
    keep = pc.equal(rows.column("kind"), "chunk")
    kept = _where(rows, keep)
    kept.validate(full=True)
    assert kept.equals(rows.filter(keep))
    assert kept.column("pcm").to_pylist() == [b"cd", b"xyz"]
    originals = {c.buffers()[2].address for c in rows.column("pcm").chunks}
    assert {c.buffers()[2].address for c in kept.column("pcm").chunks} <= originals


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_dropping_values_with_bytes_is_a_plain_filter(kind: pa.DataType) -> None:
    rows = _records(kind)
    keep = pc.not_equal(rows.column("kind"), "chunk")  # drops the chunks' audio
    kept = _where(rows, keep)
    assert kept.equals(rows.filter(keep))
    assert kept.column("pcm").to_pylist() == [None, b"", None]


def test_keeping_every_row_hands_the_table_back() -> None:
    rows = _records(pa.binary())
    assert _where(rows, pc.is_valid(rows.column("kind"))) is rows
