"""Many chunks decoded at once: the one path from raw chunk bytes to 16 kHz audio."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from features.pcm import chunks_to_16k, decode, decode_chunks, encode_mulaw, resample, to_float


def _chunks(seed: int, sizes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-20_000, 20_000, n).astype("<i2") for n in sizes]


@pytest.mark.parametrize("arrow_type", [pa.binary(), pa.large_binary(), pa.binary_view()])
def test_linear16_chunks_decode_like_one_by_one(arrow_type: pa.DataType) -> None:
    chunks = _chunks(0, (1600, 800, 3, 0, 1600))
    column = pa.array([c.tobytes() for c in chunks], pa.binary()).cast(arrow_type)
    samples, lengths = decode_chunks(column.slice(1), "linear16")
    assert lengths.tolist() == [800, 3, 0, 1600]
    np.testing.assert_array_equal(
        samples, np.concatenate([decode(c.tobytes(), "linear16") for c in chunks[1:]])
    )


def test_mulaw_chunks_across_arrow_chunks() -> None:
    chunks = _chunks(1, (800, 800, 400))
    column = pa.chunked_array(
        [[encode_mulaw(c) for c in chunks[:2]], [encode_mulaw(chunks[2])]], pa.binary()
    )
    samples, lengths = decode_chunks(column, "mulaw")
    assert lengths.tolist() == [800, 800, 400]
    expected = np.concatenate([decode(encode_mulaw(c), "mulaw") for c in chunks])
    np.testing.assert_array_equal(samples, expected)


def test_a_stream_resamples_as_one_signal() -> None:
    t = np.arange(8000) / 8000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    column = pa.array([tone[i : i + 800].tobytes() for i in range(0, 8000, 800)], pa.binary())
    audio = chunks_to_16k(column, "linear16", 8000)
    np.testing.assert_allclose(audio, resample(to_float(tone), 8000), atol=1e-6)
    assert audio.dtype == np.float32 and audio.size == 16000


@pytest.mark.parametrize(
    ("data", "encoding", "message"),
    [([b"\x00\x01\x02"], "linear16", "odd"), ([b"\x00"], "opus", "opus")],
)
def test_bad_chunks_say_what_is_wrong(data: list[bytes], encoding: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_chunks(pa.array(data, pa.binary()), encoding)
