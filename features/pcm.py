"""Decoding and resampling of raw audio: the first step of every feature path.

Clients send little-endian PCM16 (``linear16``) or 8-bit G.711 mu-law (``mulaw``) at 8–48 kHz;
everything downstream works on float32 mono at :data:`SAMPLE_RATE_HZ` in [-1, 1). Resampling
uses libsoxr (``soxr``): the batch path resamples a whole clip, the streaming path keeps a
:class:`StreamResampler` per session so chunk-by-chunk output matches the whole-clip output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import soxr

if TYPE_CHECKING:
    import pyarrow as pa

SAMPLE_RATE_HZ = 16_000
"""The rate every model and feature works at."""
MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 48_000
Encoding = Literal["linear16", "mulaw"]
ENCODINGS: tuple[str, ...] = ("linear16", "mulaw")
BYTES_PER_SAMPLE: dict[str, int] = {"linear16": 2, "mulaw": 1}

_MULAW_BIAS = 0x84


def _mulaw_table() -> np.ndarray:
    """The 256-entry G.711 mu-law to PCM16 table (ITU-T G.711, same as audioop.ulaw2lin)."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


MULAW_TO_PCM16 = _mulaw_table()


def check_format(encoding: str, sample_rate: int) -> None:
    """Raise ValueError with what to change when a stream format is not supported."""
    if encoding not in ENCODINGS:
        raise ValueError(
            f"encoding={encoding!r} is not supported; use one of {', '.join(ENCODINGS)}"
        )
    if not MIN_SAMPLE_RATE_HZ <= sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise ValueError(
            f"sample_rate={sample_rate} is not supported; "
            f"use {MIN_SAMPLE_RATE_HZ}–{MAX_SAMPLE_RATE_HZ}"
        )


def decode_pcm16(data: bytes) -> np.ndarray:
    """Raw bytes → int16 samples; raises ValueError on an odd byte count."""
    if len(data) % 2:
        raise ValueError(f"linear16 frame of {len(data)} bytes is not a whole number of samples")
    return np.frombuffer(data, dtype="<i2")


def decode(data: bytes, encoding: str) -> np.ndarray:
    """Raw bytes of ``encoding`` → int16 samples."""
    if encoding == "linear16":
        return decode_pcm16(data)
    if encoding == "mulaw":
        return MULAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)]
    raise ValueError(f"encoding={encoding!r} is not supported; use one of {', '.join(ENCODINGS)}")


def decode_chunks(pcm: pa.Array | pa.ChunkedArray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Many chunks' raw bytes (an Arrow binary column, in stream order) decoded at once.

    Returns the int16 samples of all chunks back to back and each chunk's sample count. One
    pass over the column's data buffer, no Python loop per chunk: a session's or a whole
    batch's chunks decode in about the time of a memory copy. Raises ValueError on an unknown
    encoding or a linear16 chunk with an odd byte count.
    """
    import pyarrow as pa

    if encoding not in BYTES_PER_SAMPLE:
        raise ValueError(
            f"encoding={encoding!r} is not supported; use one of {', '.join(ENCODINGS)}"
        )
    column = pcm.combine_chunks() if isinstance(pcm, pa.ChunkedArray) else pcm
    if not pa.types.is_large_binary(column.type):
        column = column.cast(pa.large_binary())  # one offsets layout for binary, large, view
    if len(column) == 0:
        return np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int64)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[
        column.offset : column.offset + len(column) + 1
    ]
    nbytes = np.diff(offsets)
    width = BYTES_PER_SAMPLE[encoding]
    if np.any(nbytes % width):
        raise ValueError(f"{encoding} chunk of an odd byte count is not a whole number of samples")
    if offsets[-1] == offsets[0]:
        return np.zeros(0, dtype=np.int16), nbytes // width
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    samples = data.view("<i2") if encoding == "linear16" else MULAW_TO_PCM16[data]
    return samples, nbytes // width


def chunks_to_16k(
    pcm: pa.Array | pa.ChunkedArray, encoding: str, sample_rate_hz: int
) -> np.ndarray:
    """Consecutive chunks of one stream → float32 mono at :data:`SAMPLE_RATE_HZ`.

    The chunks are decoded together (:func:`decode_chunks`) and resampled as one signal, so
    there are no filter edges between chunks: the result is what the stream sounded like.
    """
    samples, _ = decode_chunks(pcm, encoding)
    return resample(to_float(samples), sample_rate_hz)


_MULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def encode_mulaw(samples: np.ndarray) -> bytes:
    """int16 samples → G.711 mu-law bytes, bit-exact with the ITU reference (14-bit segments)."""
    pcm = np.asarray(samples, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, magnitude)
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)  # past the last segment: the largest code
    return ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()


def to_float(samples: np.ndarray) -> np.ndarray:
    """int16 → float32 in [-1, 1)."""
    return samples.astype(np.float32) / 32768.0


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1) → int16 with saturation."""
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def resample(audio: np.ndarray, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Resample a whole float32 clip (libsoxr, high quality)."""
    if from_hz == to_hz:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio.astype(np.float32, copy=False), from_hz, to_hz, quality="HQ")


class StreamResampler:
    """Per-session resampler: feed chunks, get 16 kHz audio with no seams between chunks.

    Call :meth:`flush` at the end of the stream for the filter's tail. At the same rate it is a
    pass-through, so the common 16 kHz case costs nothing.
    """

    def __init__(self, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> None:
        self.from_hz = from_hz
        self.to_hz = to_hz
        self._stream = (
            None if from_hz == to_hz else soxr.ResampleStream(from_hz, to_hz, 1, dtype="float32")
        )

    def process(self, audio: np.ndarray, *, last: bool = False) -> np.ndarray:
        audio = audio.astype(np.float32, copy=False)
        if self._stream is None:
            return audio
        return self._stream.resample_chunk(audio, last=last)

    def flush(self) -> np.ndarray:
        return self.process(np.zeros(0, dtype=np.float32), last=True)
