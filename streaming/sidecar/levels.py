"""Levels of many utterances at once, from per-chunk statistics (numpy over the whole batch).

The sidecar measures each utterance from the chunks it spans (``first_seq`` … ``last_seq``):
RMS and SNR over the 20-ms frames inside its span, peak and clipping over those whole
chunks. It never keeps audio between batches:
every chunk is reduced once, when it lands, to a few numbers — sample count, sum of squares,
peak, clipped samples, and the power of each 20-ms frame (:data:`SNR_FRAME_SAMPLES`) — and an
utterance's levels are sums, maxima and percentiles over its chunks' numbers. The formulas
are those of :mod:`features.levels` (RMS/peak dBFS with the same floor, clipping at the same
rail, SNR from the 10th/90th percentile of frame power), computed for every utterance of a
batch in a handful of vectorised passes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.levels import (
    CLIP_THRESHOLD,
    LEVEL_FLOOR_DBFS,
    SNR_FRAME_SAMPLES,
    SNR_MAX_DB,
    SNR_NOISE_PERCENTILE,
    SNR_SIGNAL_PERCENTILE,
    power_to_db,
)
from features.pcm import decode_chunks

STATS_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("received_us", pa.int64(), nullable=False),
        pa.field("event_us", pa.int64(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("samples", pa.int64(), nullable=False),
        pa.field("sumsq", pa.float64(), nullable=False),
        pa.field("peak", pa.float32(), nullable=False),
        pa.field("clipped", pa.int64(), nullable=False),
        pa.field("frames", pa.list_(pa.float32()), nullable=False),
    ]
)
"""One row per landed chunk: what its utterance's levels need (float audio in [-1, 1))."""

_FLOOR_POWER = 10.0 ** (LEVEL_FLOOR_DBFS / 10.0)
_FULL_SCALE = 32768
_RAIL = int(np.ceil(CLIP_THRESHOLD * _FULL_SCALE))
"""|int16| at or above this sits at the rail (32767), as :data:`CLIP_THRESHOLD` says."""


def chunk_stats(pcm: pa.ChunkedArray | pa.Array, encoding: str) -> dict[str, np.ndarray]:
    """Per-chunk samples, sum of squares, peak, clipped count and 20-ms frame powers
    (``frames`` values and per-chunk ``frame_counts``) of chunks of one encoding.

    Each Arrow chunk of the column (a spool segment's records) is measured where it lies:
    combining them first would copy the batch's audio. See :func:`_array_stats`.
    """
    parts = pcm.chunks if isinstance(pcm, pa.ChunkedArray) else [pcm]
    measured = [_array_stats(part, encoding) for part in parts if len(part)]
    if not measured:
        return _array_stats(pa.array([], pa.binary()), encoding)
    return {name: np.concatenate([m[name] for m in measured]) for name in measured[0]}


def _array_stats(pcm: pa.Array, encoding: str) -> dict[str, np.ndarray]:
    """:func:`chunk_stats` of one contiguous Arrow array.

    The work is done per 20-ms frame, as rows of a 2-D view of the batch's samples: sums of
    squares (exact), peaks from each row's max and min, clipping counted only in the
    rare frames whose peak reaches the rail; a chunk's figures are then sums and maxima over
    its frames plus its tail (the samples after its last whole frame). When every chunk holds
    whole frames (100-ms chunks at 16 kHz do) the view is the samples themselves, reshaped:
    no copy. Values are for float audio in [-1, 1) (int16 / 32768).
    """
    samples, lengths = decode_chunks(pcm, encoding)
    n = lengths.size
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    frame_counts = lengths // SNR_FRAME_SAMPLES
    whole = frame_counts * SNR_FRAME_SAMPLES
    if np.array_equal(whole, lengths):
        frames = samples.reshape(-1, SNR_FRAME_SAMPLES)
    else:
        within = _ranges(np.zeros(n, dtype=np.int64), frame_counts)
        frame_starts = np.repeat(starts[:-1], frame_counts) + within * SNR_FRAME_SAMPLES
        frames = _frame_rows(samples)[frame_starts]
    frame_sq, frame_peak = _row_sumsq(frames), _row_peak(frames)
    frame_clipped = np.zeros(frame_peak.size, dtype=np.int64)
    hot = np.flatnonzero(frame_peak >= _RAIL)
    if hot.size:
        frame_clipped[hot] = np.count_nonzero(_at_rail(frames[hot]), axis=1)
    # Per chunk: its frames, reduced over the frame ranges, then its tail's samples.
    frame_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(frame_counts, out=frame_offsets[1:])
    sumsq = _per_range(np.add, frame_sq, frame_offsets)
    peak = _per_range(np.maximum, frame_peak, frame_offsets)
    clipped = _per_range(np.add, frame_clipped, frame_offsets)
    tail = lengths - whole
    if tail.any():
        tail_index = _ranges(starts[:-1] + whole, tail)
        values = samples[tail_index].astype(np.int64)
        tail_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(tail, out=tail_offsets[1:])
        sumsq += _per_range(np.add, values * values, tail_offsets)
        peak = np.maximum(peak, _per_range(np.maximum, np.abs(values), tail_offsets))
        clipped += _per_range(np.add, _at_rail(values).astype(np.int64), tail_offsets)
    return {
        "samples": lengths.astype(np.int64),
        "sumsq": sumsq / float(_FULL_SCALE**2),
        "peak": (peak / _FULL_SCALE).astype(np.float32),
        "clipped": clipped,
        "frames": (frame_sq / float(_FULL_SCALE**2 * SNR_FRAME_SAMPLES)).astype(np.float32),
        "frame_counts": frame_counts.astype(np.int64),
    }


_ROW_BLOCK = 256
"""Frames per block of the sum-of-squares pass (~650 kB as float64): the widened copy stays
in the core's cache, which makes the pass several times faster than one over the batch."""


def _frame_rows(samples: np.ndarray) -> np.ndarray:
    """Every window of :data:`SNR_FRAME_SAMPLES` samples (a strided view, no copy)."""
    if samples.size < SNR_FRAME_SAMPLES:
        return np.zeros((0, SNR_FRAME_SAMPLES), dtype=samples.dtype)
    return np.lib.stride_tricks.sliding_window_view(samples, SNR_FRAME_SAMPLES)


def _ranges(first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``first[i], first[i] + 1, …, first[i] + counts[i] - 1`` for every i, concatenated."""
    total = int(counts.sum())
    offsets = np.cumsum(counts) - counts
    return np.repeat(first - offsets, counts) + np.arange(total)


def _row_sumsq(rows: np.ndarray) -> np.ndarray:
    """Sum of squares of each row of int16 samples, block by block; exact (every product and
    every sum of a row's products is an integer below 2**53)."""
    out = np.zeros(rows.shape[0], dtype=np.float64)
    for at in range(0, rows.shape[0], _ROW_BLOCK):
        block = rows[at : at + _ROW_BLOCK].astype(np.float64)
        np.einsum("ij,ij->i", block, block, out=out[at : at + _ROW_BLOCK])
    return out


def _row_peak(rows: np.ndarray) -> np.ndarray:
    """Largest |sample| of each row (int64: |-32768| does not fit int16)."""
    if rows.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.maximum(rows.max(axis=1).astype(np.int64), -rows.min(axis=1).astype(np.int64))


def _at_rail(values: np.ndarray) -> np.ndarray:
    """Which samples sit at the rail (|int16| ≥ :data:`_RAIL`)."""
    return (values >= _RAIL) | (values <= -_RAIL)


def _per_range(ufunc: np.ufunc, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``ufunc`` over ``values[offsets[i]:offsets[i + 1]]`` for each i (0 for an empty range;
    every value here is ≥ 0, so 0 is the identity of max too)."""
    out = np.zeros(offsets.size - 1, dtype=values.dtype)
    nonempty = offsets[1:] > offsets[:-1]
    if nonempty.any():
        padded = np.append(values, np.zeros(1, dtype=values.dtype))
        out[nonempty] = _reduce_padded(ufunc, padded, offsets[:-1][nonempty], offsets[1:][nonempty])
    return out


def _segment_sum(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum(values[lo[i]:hi[i]]) for non-empty ranges (see :func:`_segment_reduce`)."""
    return _segment_reduce(np.add, values, lo, hi, 0)


def _segment_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo[i]:hi[i]]) for non-empty ranges (see :func:`_segment_reduce`)."""
    return _segment_reduce(np.maximum, values, lo, hi, -np.inf)


def _segment_reduce(
    ufunc: np.ufunc, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, identity: float
) -> np.ndarray:
    """``ufunc`` over each ``values[lo[i]:hi[i]]`` (non-empty, in any order, overlapping or not).

    ``reduceat`` over the interleaved bounds reduces each ``[lo, hi)``; the odd results (the
    gaps between ranges) are dropped. One ``identity`` element past the end makes every bound
    a valid index, so a range may end at the last value wherever it sits in the list.
    """
    padded = np.append(values, np.asarray(identity, dtype=values.dtype))
    return _reduce_padded(ufunc, padded, lo, hi)


def _reduce_padded(
    ufunc: np.ufunc, padded: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """:func:`_segment_reduce` over values that already end with one identity element."""
    bounds = np.empty(lo.size * 2, dtype=np.int64)
    bounds[0::2], bounds[1::2] = lo, hi
    return ufunc.reduceat(padded, bounds)[0::2]


def utterance_levels(
    stats: pa.Table, lo: np.ndarray, hi: np.ndarray, start_us: np.ndarray, end_us: np.ndarray
) -> dict[str, np.ndarray]:
    """RMS/peak dBFS, clipping ratio and SNR of each utterance spanning stats rows
    ``[lo[i], hi[i])`` (rows in session, seq order) and the UTC span ``[start_us, end_us)``.

    RMS and SNR use the 20-ms frames inside the span (the first chunk's frames from the
    utterance's start on, the last chunk's up to its end), so they match the utterance's audio
    to a frame; peak and clipping are over its whole chunks. An utterance with no chunk
    statistics (its chunks landed too long ago) reads floor levels and 0 dB."""
    samples = np.asarray(stats.column("samples"), dtype=np.int64)
    sumsq = np.asarray(stats.column("sumsq"), dtype=np.float64)
    peak = np.asarray(stats.column("peak"), dtype=np.float32)
    clipped = np.asarray(stats.column("clipped"), dtype=np.int64)
    frames_col = stats.column("frames").combine_chunks()
    frame_offsets = np.asarray(frames_col.offsets, dtype=np.int64)
    frame_values = np.asarray(frames_col.flatten(), dtype=np.float64)

    def window_sum(values: np.ndarray) -> np.ndarray:
        csum = np.concatenate([[0], np.cumsum(values)])
        return csum[hi] - csum[lo]

    n = window_sum(samples)
    total_sq = window_sum(sumsq)
    total_clipped = window_sum(clipped)
    has = (hi > lo) & (n > 0)
    peaks = np.zeros(lo.size, dtype=np.float64)
    if has.any():
        peaks[has] = _segment_max(peak, lo[has], hi[has])
    safe_n = np.maximum(n, 1)
    rms = np.where(has, power_to_db(total_sq / safe_n), LEVEL_FLOOR_DBFS)
    peak_db = np.where(has, power_to_db(peaks * peaks), LEVEL_FLOOR_DBFS)
    clipping = np.where(has, total_clipped / safe_n, 0.0)
    f_lo, f_hi = _span_frames(stats, frame_offsets, lo, hi, start_us, end_us)
    frame_csum = np.concatenate([[0.0], np.cumsum(frame_values)])
    in_span = f_hi - f_lo
    span_power = (frame_csum[f_hi] - frame_csum[f_lo]) / np.maximum(in_span, 1)
    rms = np.where(has & (in_span > 0), power_to_db(span_power), rms)
    snr = _snr(frame_values, f_lo, f_hi)
    return {"rms_dbfs": rms, "peak_dbfs": peak_db, "clipping_ratio": clipping, "snr_db": snr}


def _span_frames(
    stats: pa.Table,
    frame_offsets: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    start_us: np.ndarray,
    end_us: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The frame range ``[f_lo, f_hi)`` of each utterance's span within its chunks."""
    f_lo = frame_offsets[lo].copy()
    f_hi = frame_offsets[hi].copy()
    has = hi > lo
    if not has.any() or stats.num_rows == 0:
        return f_lo, np.maximum(f_hi, f_lo)
    event_us = np.asarray(stats.column("event_us"), dtype=np.int64)
    rate = np.asarray(stats.column("sample_rate"), dtype=np.int64)
    # Frames counted on the first chunk's grid (exact when chunks hold whole 20-ms frames,
    # as 100-ms chunks do at 16 kHz; within a frame per chunk otherwise).
    first = lo[has]
    frame_us = SNR_FRAME_SAMPLES * 1_000_000 / rate[first]
    skip = np.floor((start_us[has] - event_us[first]) / frame_us).astype(np.int64)
    upto = np.ceil((end_us[has] - event_us[first]) / frame_us).astype(np.int64)
    f_lo[has] = np.clip(frame_offsets[first] + skip, frame_offsets[first], f_hi[has])
    f_hi[has] = np.clip(frame_offsets[first] + upto, f_lo[has], f_hi[has])
    return f_lo, np.maximum(f_hi, f_lo)


def _snr(frames: np.ndarray, f_lo: np.ndarray, f_hi: np.ndarray) -> np.ndarray:
    """:func:`features.levels.snr_db` per group of frame powers ``frames[f_lo:f_hi]``."""
    counts = np.maximum(f_hi - f_lo, 0)
    out = np.zeros(counts.size, dtype=np.float64)
    total = int(counts.sum())
    if total == 0:
        return out
    group = np.repeat(np.arange(counts.size), counts)
    offsets = np.cumsum(counts) - counts
    index = np.repeat(f_lo, counts) + np.arange(total) - np.repeat(offsets, counts)
    values = frames[index]
    order = np.lexsort((values, group))
    ordered = values[order]

    def percentile(q: float) -> np.ndarray:
        pos = q / 100.0 * (np.maximum(counts, 1) - 1)
        below = np.floor(pos).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(counts, 1) - 1)
        frac = pos - below
        base = offsets.clip(0, total - 1)
        low = ordered[np.minimum(base + below, total - 1)]
        high = ordered[np.minimum(base + above, total - 1)]
        return low + frac * (high - low)

    quiet = np.maximum(percentile(SNR_NOISE_PERCENTILE), _FLOOR_POWER)
    signal = np.maximum(percentile(SNR_SIGNAL_PERCENTILE) - quiet, _FLOOR_POWER)
    snr = np.clip(10.0 * np.log10(signal / quiet), 0.0, SNR_MAX_DB)
    return np.where(counts >= 2, snr, 0.0)
