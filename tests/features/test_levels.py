"""Levels (dBFS), clipping and SNR of signals whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from features import levels, snr_db
from features.levels import LEVEL_FLOOR_DBFS

RATE_HZ = 16_000


def sine(amplitude: float, freq_hz: float = 997.0, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_full_scale_sine_is_minus_3_dbfs_rms_and_0_peak() -> None:
    level = levels(sine(1.0))
    assert level.rms_dbfs == pytest.approx(-3.0103, abs=0.01)
    assert level.peak_dbfs == pytest.approx(0.0, abs=0.01)


def test_half_amplitude_is_6_db_lower() -> None:
    level = levels(sine(0.5))
    assert level.rms_dbfs == pytest.approx(-9.0309, abs=0.01)
    assert level.peak_dbfs == pytest.approx(-6.0206, abs=0.01)
    assert level.clipping_ratio == 0.0


def test_silence_and_empty_read_the_floor() -> None:
    for audio in (np.zeros(RATE_HZ, np.float32), np.zeros(0, np.float32)):
        level = levels(audio)
        assert level.rms_dbfs == level.peak_dbfs == LEVEL_FLOOR_DBFS
        assert level.clipping_ratio == 0.0


def test_clipping_ratio_counts_samples_at_the_rail() -> None:
    clipped = np.clip(sine(4.0), -1.0, 1.0)
    expected = np.mean(np.abs(clipped) >= 32767 / 32768)
    assert levels(clipped).clipping_ratio == pytest.approx(expected)
    assert 0.7 < expected < 0.9
    square = np.sign(sine(1.0)).astype(np.float32)
    square[square == 0] = 1.0
    assert levels(square).clipping_ratio == 1.0
    assert levels(square).rms_dbfs == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("snr_target_db", [10.0, 20.0, 30.0])
def test_snr_of_a_tone_burst_in_noise(snr_target_db: float) -> None:
    rng = np.random.default_rng(3)
    tone_power = 0.5**2 / 2
    noise_std = np.sqrt(tone_power / 10 ** (snr_target_db / 10))
    audio = (rng.standard_normal(2 * RATE_HZ) * noise_std).astype(np.float32)
    audio[RATE_HZ // 2 : RATE_HZ // 2 + RATE_HZ] += sine(0.5)
    assert snr_db(audio) == pytest.approx(snr_target_db, abs=1.5)


def test_stationary_noise_has_no_snr() -> None:
    rng = np.random.default_rng(4)
    assert snr_db((rng.standard_normal(RATE_HZ) * 0.1).astype(np.float32)) < 2.0
    assert snr_db(np.zeros(100, np.float32)) == 0.0
