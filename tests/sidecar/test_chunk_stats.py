"""Per-chunk level statistics against a chunk-by-chunk reference, for any chunk sizes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from features.levels import SNR_FRAME_SAMPLES
from features.pcm import decode
from streaming.sidecar.levels import chunk_stats

FULL = 32768.0


def _reference(chunk: np.ndarray) -> dict[str, object]:
    """One chunk measured on its own, the plain way (float64, whole 20-ms frames)."""
    x = chunk.astype(np.float64) / FULL
    frames = x[: x.size // SNR_FRAME_SAMPLES * SNR_FRAME_SAMPLES].reshape(-1, SNR_FRAME_SAMPLES)
    return {
        "samples": x.size,
        "sumsq": float((x * x).sum()),
        "peak": float(np.abs(x).max()) if x.size else 0.0,
        "clipped": int(np.count_nonzero(np.abs(chunk.astype(np.int64)) >= 32767)),
        "frames": (frames * frames).mean(axis=1),
    }


def _chunks(lengths: list[int], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        x = rng.normal(0.0, 6000.0, n)
        x[rng.random(n) < 0.02] = 40000.0  # some samples at either rail
        x[rng.random(n) < 0.02] = -40000.0
        out.append(np.clip(x, -32768, 32767).astype("<i2").tobytes())
    return out


@pytest.mark.parametrize(
    "lengths",
    [
        [1600] * 12,  # 100-ms chunks: whole frames, measured in place
        [0, 1, 319, 320, 321, 1000, 0, 4001],  # tails and empty chunks
        [],
    ],
)
@pytest.mark.parametrize("encoding", ["linear16", "mulaw"])
def test_batch_statistics_match_each_chunk_measured_alone(
    lengths: list[int], encoding: str
) -> None:
    payloads = _chunks(lengths, seed=len(lengths))
    if encoding == "mulaw":
        payloads = [p[: len(p) // 2] for p in payloads]  # one byte a sample
    # Two Arrow chunks, as a batch of two spool segments arrives.
    half = len(payloads) // 2
    column = pa.chunked_array(
        [pa.array(payloads[:half], pa.binary()), pa.array(payloads[half:], pa.binary())]
    )
    stats = chunk_stats(column, encoding)
    expected = [_reference(decode(p, encoding)) for p in payloads]
    assert stats["samples"].tolist() == [e["samples"] for e in expected]
    assert stats["clipped"].tolist() == [e["clipped"] for e in expected]
    np.testing.assert_allclose(stats["sumsq"], [e["sumsq"] for e in expected], rtol=1e-12)
    np.testing.assert_allclose(stats["peak"], [e["peak"] for e in expected], rtol=1e-6)
    counts = stats["frame_counts"].tolist()
    assert counts == [len(e["frames"]) for e in expected]  # type: ignore[arg-type]
    frames = np.split(stats["frames"], np.cumsum(counts)[:-1]) if counts else []
    for got, e in zip(frames, expected, strict=True):
        np.testing.assert_allclose(got, e["frames"], rtol=1e-6)
