"""Per-utterance reductions over a batch's chunk statistics, in the orders a batch produces."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.sidecar.levels import _segment_max, _segment_sum


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        ([0, 2], [2, 5]),
        ([3, 0, 1], [5, 2, 5]),  # a range ending at the last value, not listed last
        ([4], [5]),
        ([0, 0], [5, 1]),
    ],
)
def test_segment_reductions_match_slices(lo: list[int], hi: list[int]) -> None:
    values = np.array([1.0, 5.0, 2.0, 7.0, 3.0], dtype=np.float32)
    counts = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    low, high = np.array(lo), np.array(hi)
    ranges = list(zip(lo, hi, strict=True))
    assert _segment_max(values, low, high).tolist() == [values[a:b].max() for a, b in ranges]
    assert _segment_sum(counts, low, high).tolist() == [counts[a:b].sum() for a, b in ranges]
