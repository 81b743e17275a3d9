"""Window fitting and the per-event summary vector, on generated signals."""

from __future__ import annotations

import numpy as np
import pytest

from features import SUMMARY_COLUMNS, fit_window, levels, summary_features
from features.pcm import decode, encode_mulaw, resample, to_float, to_pcm16
from features.spectral import logmel

RATE_HZ = 16_000


def tone(seconds: float, freq_hz: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_a_long_segment_keeps_its_loudest_second() -> None:
    audio = np.zeros(3 * RATE_HZ, np.float32)
    audio[40_000:44_000] = tone(0.25)
    window = fit_window(audio)
    assert window.shape == (RATE_HZ,)
    assert np.sum(window**2) == pytest.approx(np.sum(audio**2), rel=1e-6)


def test_a_short_segment_is_padded_around_its_energy() -> None:
    audio = np.zeros(8000, np.float32)
    audio[:2000] = tone(0.125)  # energy at the start of the segment
    window = fit_window(audio)
    assert window.shape == (RATE_HZ,)
    loud = np.flatnonzero(np.abs(window) > 0)
    centre = (loud[0] + loud[-1]) / 2
    assert abs(centre - RATE_HZ / 2) < 200  # the burst, not the segment, is centred
    np.testing.assert_array_equal(fit_window(tone(1.0)), tone(1.0))


def test_summary_vector_has_its_named_columns() -> None:
    vector = summary_features(tone(0.6))
    assert vector.dtype == np.float32 and vector.shape == (len(SUMMARY_COLUMNS),)
    named = dict(zip(SUMMARY_COLUMNS, vector.tolist(), strict=True))
    assert named["duration_s"] == pytest.approx(0.6)
    assert named["rms_dbfs"] == pytest.approx(levels(tone(0.6)).rms_dbfs, abs=1e-4)
    assert named["spectral_centroid_hz"] == pytest.approx(1000.0, abs=40.0)
    assert named["zero_crossing_rate"] == pytest.approx(2 * 1000 / RATE_HZ, abs=0.005)
    assert named["spectral_flatness"] < 0.01
    assert np.all(np.isfinite(vector))
    assert np.all(np.isfinite(summary_features(np.zeros(10, np.float32))))


def test_telephone_band_audio_loses_the_top_mel_groups() -> None:
    rng = np.random.default_rng(5)
    wideband = (rng.standard_normal(RATE_HZ) * 0.1).astype(np.float32)
    narrowband = resample(resample(wideband, RATE_HZ, 8000), 8000, RATE_HZ)
    wide = dict(zip(SUMMARY_COLUMNS, summary_features(wideband), strict=True))
    narrow = dict(zip(SUMMARY_COLUMNS, summary_features(narrowband), strict=True))
    assert narrow["logmel_band_7"] < wide["logmel_band_7"] - 3.0  # natural log: > 20× less power
    assert narrow["logmel_band_0"] == pytest.approx(wide["logmel_band_0"], abs=0.3)
    assert narrow["spectral_centroid_hz"] < 0.6 * wide["spectral_centroid_hz"]
    assert wide["spectral_flatness"] > 0.5


def test_mulaw_round_trip_keeps_the_features() -> None:
    """Telephony audio (8-bit mu-law) gives the model nearly the same log-mel as PCM16."""
    audio = tone(1.0, 440.0, 0.3) + tone(1.0, 2500.0, 0.1)
    coded = to_float(decode(encode_mulaw(to_pcm16(audio)), "mulaw"))
    assert levels(coded).rms_dbfs == pytest.approx(levels(audio).rms_dbfs, abs=0.1)
    loud_bands = logmel(audio).mean(axis=0) > -4
    assert loud_bands.any()
    np.testing.assert_allclose(
        logmel(coded).mean(axis=0)[loud_bands], logmel(audio).mean(axis=0)[loud_bands], atol=0.1
    )


def test_8khz_resample_round_trip_keeps_the_tone() -> None:
    audio = tone(1.0, 440.0)
    back = resample(resample(audio, RATE_HZ, 8000), 8000, RATE_HZ)
    assert back.shape == audio.shape
    core = slice(800, -800)  # filter edges aside
    assert np.corrcoef(audio[core], back[core])[0, 1] > 0.999
