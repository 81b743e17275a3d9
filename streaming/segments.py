"""Speech segments from VAD probabilities, and the seq bookkeeping of landed chunks.

Pure numpy, no audio libraries: the driver imports :class:`SegmenterParams` without paying for
the feature stack. The segmenter follows the gateway's endpointing idea: hysteresis on the
speech probability (start at ``threshold_on`` held for ``min_speech_ms``, stay in speech while
at or above ``threshold_off``), and a segment ends after ``endpointing_ms`` of silence or at
``max_event_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE_HZ = 16_000
VAD_WINDOW_SAMPLES = 512
"""Samples per VAD probability at 16 kHz (32 ms), as :mod:`streaming.vad` scores them."""


@dataclass(frozen=True)
class SegmenterParams:
    """How speech segments are found and when open work is flushed (units in the names)."""

    threshold_on: float = 0.5
    threshold_off: float = 0.35
    min_speech_ms: int = 100
    endpointing_ms: int = 300
    max_event_ms: int = 10_000
    vad_gate_dbfs: float | None = -60.0
    """VAD windows quieter than this skip the model (probability 0), as in the gateway."""
    carry_tail_ms: int = 300
    """Audio kept for the next batch before the point analysis stops: the whole tail when no
    segment is open (so one starting at the edge is seen whole), or a lead-in before an open
    segment (so the VAD has warmed up when the speech begins)."""
    idle_flush_s: float = 5.0
    """A session with no new chunk for this long has its open segment closed. Idle time is
    measured on the data's clock, the batch *watermark* (the latest ``received_at`` in the
    batch), so replays and backfills of old spool data behave as they did live."""
    session_timeout_s: float = 900.0
    """A session idle this long is forgotten (its landed ranges no longer dedup re-sends)."""
    flush_all: bool = False
    """Every group is complete (event-time session windows on a cluster runner): no carry."""

    def windows(self, ms: int) -> int:
        return max(1, -(-ms * SAMPLE_RATE_HZ // 1000 // VAD_WINDOW_SAMPLES))


def seqs_in_ranges(seqs: np.ndarray, lo: list[int], hi: list[int]) -> np.ndarray:
    """Boolean mask: which ``seqs`` fall inside the sorted inclusive ranges ``[lo, hi]``."""
    if not lo or seqs.size == 0:
        return np.zeros(seqs.size, dtype=bool)
    lo_arr = np.asarray(lo, dtype=np.int64)
    hi_arr = np.asarray(hi, dtype=np.int64)
    idx = np.searchsorted(lo_arr, seqs, side="right") - 1
    inside = idx >= 0
    inside[inside] = seqs[inside] <= hi_arr[idx[inside]]
    return inside


def add_to_ranges(lo: list[int], hi: list[int], seqs: np.ndarray) -> tuple[list[int], list[int]]:
    """The union of the ranges and ``seqs``, as sorted, merged inclusive ranges."""
    if seqs.size == 0:
        return list(lo), list(hi)
    s = np.unique(seqs.astype(np.int64))
    breaks = np.flatnonzero(np.diff(s) != 1)
    starts = np.concatenate([[s[0]], s[breaks + 1]])
    ends = np.concatenate([s[breaks], [s[-1]]])
    all_lo = np.concatenate([np.asarray(lo, dtype=np.int64), starts])
    all_hi = np.concatenate([np.asarray(hi, dtype=np.int64), ends])
    order = np.argsort(all_lo, kind="stable")
    merged_lo: list[int] = []
    merged_hi: list[int] = []
    for a, b in zip(all_lo[order].tolist(), all_hi[order].tolist(), strict=True):
        if merged_hi and a <= merged_hi[-1] + 1:
            merged_hi[-1] = max(merged_hi[-1], b)
        else:
            merged_lo.append(a)
            merged_hi.append(b)
    return merged_lo, merged_hi


def find_segments(
    probs: np.ndarray, params: SegmenterParams
) -> tuple[list[tuple[int, int]], int | None]:
    """Closed speech segments as VAD-window ranges ``[start, end)``, and where an open one
    (or a speech candidate) starts, if the audio ends inside one."""
    on_needed = params.windows(params.min_speech_ms)
    silence_needed = params.windows(params.endpointing_ms)
    max_windows = params.windows(params.max_event_ms)
    closed: list[tuple[int, int]] = []
    candidate: int | None = None
    start = last_speech = 0
    in_speech = False
    loud = np.flatnonzero(probs >= params.threshold_off)
    if loud.size == 0:
        return closed, None
    w = int(loud[0])
    n = probs.size
    while w < n:
        p = float(probs[w])
        if not in_speech:
            if p >= params.threshold_on:
                candidate = w if candidate is None else candidate
                if w + 1 - candidate >= on_needed:
                    in_speech, start, last_speech, candidate = True, candidate, w + 1, None
            elif p < params.threshold_off:
                candidate = None
                later = loud[np.searchsorted(loud, w, side="right") :]
                if later.size == 0:
                    break
                w = int(later[0])
                continue
        else:
            if p >= params.threshold_off:
                last_speech = w + 1
            if w + 1 - last_speech >= silence_needed:
                closed.append((start, last_speech))
                in_speech = False
            elif w + 1 - start >= max_windows:
                closed.append((start, w + 1))
                in_speech = False
        w += 1
    if in_speech:
        return closed, start
    return closed, candidate
