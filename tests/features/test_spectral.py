"""Framing, log-mel and MFCC on generated signals; streaming output equals batch output."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from features import (
    CLASSIFIER_WINDOW_SAMPLES,
    N_MELS,
    WINDOW_FRAMES,
    LogMelStream,
    frame_signal,
    logmel,
    logmel_batch,
    mfcc,
)
from features.spectral import (
    FRAME_SAMPLES,
    HOP_SAMPLES,
    LOG_FLOOR,
    frames_in,
    logmel_frames,
    mel_filterbank,
)

RATE_HZ = 16_000


def sine(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def band_of(freq_hz: float) -> int:
    """The mel band whose filter peaks at the FFT bin of ``freq_hz`` (a bin-centred tone)."""
    bin_index = round(freq_hz * 512 / RATE_HZ)
    assert bin_index * RATE_HZ / 512 == freq_hz, "use a bin-centred frequency"
    return int(np.argmax(mel_filterbank()[bin_index]))


def test_one_second_gives_98_frames_of_40_bands() -> None:
    assert frames_in(CLASSIFIER_WINDOW_SAMPLES) == WINDOW_FRAMES == 98
    assert logmel(sine(1000)).shape == (98, N_MELS)
    assert frames_in(FRAME_SAMPLES - 1) == 0
    assert logmel(np.zeros(FRAME_SAMPLES - 1, np.float32)).shape == (0, N_MELS)


def test_frames_are_the_hop_spaced_slices() -> None:
    audio = np.arange(2000, dtype=np.float32)
    frames = frame_signal(audio)
    assert frames.shape == (frames_in(2000), FRAME_SAMPLES)
    for i in (0, 1, frames.shape[0] - 1):
        np.testing.assert_array_equal(
            frames[i], audio[i * HOP_SAMPLES : i * HOP_SAMPLES + FRAME_SAMPLES]
        )


@pytest.mark.parametrize("freq_hz", [312.5, 1000.0, 4000.0])
def test_a_sine_lights_up_its_own_mel_band(freq_hz: float) -> None:
    features = logmel(sine(freq_hz))
    assert np.all(np.isfinite(features))
    assert set(np.argmax(features, axis=1)) == {band_of(freq_hz)}
    # Steady tone: every frame is the same to float precision.
    assert np.ptp(features[:, band_of(freq_hz)]) < 1e-3


def test_log_mel_scales_with_level_and_floors_silence() -> None:
    loud, quiet = logmel(sine(1000, amplitude=0.5)), logmel(sine(1000, amplitude=0.05))
    band = band_of(1000)
    # 20 dB less amplitude is 100× less power: ln(100) lower in the tone's band.
    assert loud[0, band] - quiet[0, band] == pytest.approx(np.log(100.0), abs=1e-3)
    np.testing.assert_allclose(logmel(np.zeros(RATE_HZ, np.float32)), np.log(LOG_FLOOR), rtol=1e-6)


def test_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(1)
    windows = (rng.standard_normal((5, CLASSIFIER_WINDOW_SAMPLES)) * 0.1).astype(np.float32)
    batch = logmel_batch(windows)
    assert batch.shape == (5, 98, N_MELS)
    for row in range(5):
        np.testing.assert_allclose(batch[row], logmel(windows[row]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_sizes", [[1], [7, 399, 401], [160], [1600, 33], [16_000]])
def test_streaming_equals_batch(chunk_sizes: list[int]) -> None:
    rng = np.random.default_rng(2)
    audio = (rng.standard_normal(3 * RATE_HZ + 123) * 0.2).astype(np.float32)
    audio[RATE_HZ : RATE_HZ + 8000] += sine(700, 0.5)
    stream = LogMelStream()
    pieces, position, turn = [], 0, 0
    while position < audio.size:
        size = chunk_sizes[turn % len(chunk_sizes)]
        pieces.append(stream.push(audio[position : position + size]))
        position, turn = position + size, turn + 1
    streamed = np.concatenate(pieces)
    batch = logmel(audio)
    assert streamed.shape == batch.shape
    assert stream.frames_emitted == batch.shape[0]
    np.testing.assert_allclose(streamed, batch, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stream.recent(), batch[-WINDOW_FRAMES:], rtol=1e-5, atol=1e-5)


def test_stream_reset_starts_over() -> None:
    stream = LogMelStream()
    stream.push(sine(500, 0.5))
    stream.reset()
    assert stream.frames_emitted == 0 and stream.recent().shape == (0, N_MELS)
    np.testing.assert_allclose(stream.push(sine(500)), logmel(sine(500)), rtol=1e-5, atol=1e-5)


def test_mfcc_is_the_orthonormal_dct_of_log_mel() -> None:
    audio = sine(1200)
    coefficients = mfcc(audio, n_mfcc=13)
    assert coefficients.shape == (98, 13)
    expected_c0 = logmel(audio).sum(axis=1) / np.sqrt(N_MELS)
    np.testing.assert_allclose(coefficients[:, 0], expected_c0, rtol=1e-4)
    np.testing.assert_allclose(
        coefficients, scipy.fft.dct(logmel(audio), norm="ortho", axis=1)[:, :13], rtol=1e-5
    )


def test_block_framing_equals_the_strided_frame_view() -> None:
    """The fast block-built frames give exactly the log-mel of the plain frame view."""
    rng = np.random.default_rng(6)
    for length in (400, 559, 560, 16_000, 16_161):
        audio = (rng.standard_normal(length) * 0.3).astype(np.float32)
        np.testing.assert_allclose(logmel(audio), logmel_frames(frame_signal(audio)), atol=1e-5)
