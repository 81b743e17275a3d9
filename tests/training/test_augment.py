"""Augmentations on generated signals: shapes, shifts, noise at the asked SNR, masks, mixup."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.augment import (
    NO_AUGMENT,
    AugmentConfig,
    augment_waveforms,
    change_speed,
    mixup,
    spec_augment,
)

SAMPLES = 16_000


def burst_windows(batch: int) -> np.ndarray:
    windows = np.zeros((batch, SAMPLES), np.float32)
    t = np.arange(4000) / SAMPLES
    windows[:, 6000:10_000] = 0.3 * np.sin(2 * np.pi * 500 * t)
    return windows


def test_no_augment_is_the_identity() -> None:
    windows = burst_windows(4)
    out = augment_waveforms(
        windows, np.zeros(4, bool), np.zeros((0, SAMPLES)), np.random.default_rng(0), NO_AUGMENT
    )
    np.testing.assert_array_equal(out, windows)


def test_time_shift_moves_the_burst_within_the_limit() -> None:
    config = AugmentConfig(gain_db=(0.0, 0.0), noise_probability=0.0, time_shift_ms=100.0)
    out = augment_waveforms(
        burst_windows(64),
        np.zeros(64, bool),
        np.zeros((0, SAMPLES)),
        np.random.default_rng(1),
        config,
    )
    onsets = np.array([np.flatnonzero(np.abs(row) > 1e-6)[0] for row in out])
    assert onsets.min() >= 6000 - 1600 and onsets.max() <= 6000 + 1600
    assert len(set(onsets.tolist())) > 10  # shifts differ per window


def test_noise_is_mixed_at_the_asked_snr() -> None:
    rng = np.random.default_rng(2)
    noise_bank = (rng.standard_normal((3, SAMPLES)) * 0.05).astype(np.float32)
    windows = burst_windows(32)
    config = AugmentConfig(
        time_shift_ms=0.0, gain_db=(0.0, 0.0), noise_probability=1.0, noise_snr_db=(10.0, 10.0)
    )
    out = augment_waveforms(windows, np.zeros(32, bool), noise_bank, rng, config)
    added = out - windows
    snr = 10 * np.log10(np.mean(windows**2, axis=1) / np.mean(added**2, axis=1))
    np.testing.assert_allclose(snr, 10.0, atol=0.1)


def test_spec_augment_masks_bands_and_frames_with_the_fill() -> None:
    logmel = jnp.ones((8, 98, 40))
    fill = jnp.full((40,), -5.0)
    config = AugmentConfig(time_masks=2, time_mask_frames=10, freq_masks=2, freq_mask_bands=5)
    out = np.asarray(
        jax.jit(spec_augment, static_argnums=3)(jax.random.PRNGKey(0), logmel, fill, config)
    )
    assert set(np.unique(out)) <= {1.0, -5.0}
    masked = (out == -5.0).mean()
    assert 0.0 < masked < 0.5


def test_mixup_keeps_targets_summing_to_one() -> None:
    logmel = jnp.stack([jnp.full((98, 40), float(i)) for i in range(16)])
    targets = jax.nn.one_hot(jnp.arange(16) % 12, 12)
    mixed, soft = jax.jit(mixup, static_argnums=3)(jax.random.PRNGKey(3), logmel, targets, 0.4)
    np.testing.assert_allclose(np.asarray(soft).sum(axis=1), 1.0, atol=1e-6)
    assert np.all(np.asarray(soft).max(axis=1) >= 0.5 - 1e-6)  # the original stays dominant
    assert mixed.shape == logmel.shape


@pytest.mark.parametrize("silent", [True, False])
def test_silence_windows_get_noise_by_gain(silent: bool) -> None:
    rng = np.random.default_rng(4)
    noise_bank = (rng.standard_normal((2, SAMPLES)) * 0.05).astype(np.float32)
    windows = np.zeros((4, SAMPLES), np.float32) if silent else burst_windows(4)
    config = AugmentConfig(time_shift_ms=0.0, gain_db=(0.0, 0.0), noise_probability=1.0)
    out = augment_waveforms(windows, np.full(4, silent), noise_bank, rng, config)
    assert np.all(np.abs(out - windows).max(axis=1) > 0)  # even a digital-silence window gets noise


def test_speed_perturbation_moves_the_pitch_by_its_factor() -> None:
    t = np.arange(SAMPLES) / SAMPLES
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32)[None].repeat(3, axis=0)
    out = change_speed(tone, np.array([1.0, 1.1, 0.9]))
    np.testing.assert_allclose(out[0], tone[0], atol=1e-5)
    core = slice(4000, 12_000)  # 0.5 s: 2 Hz FFT resolution
    peaks_hz = [np.argmax(np.abs(np.fft.rfft(row[core]))) * SAMPLES / 8000 for row in out]
    assert peaks_hz == pytest.approx([500.0, 550.0, 450.0], abs=2.0)
    assert np.all(out[1, :700] == 0.0)  # sped up: the edges come from outside the window
