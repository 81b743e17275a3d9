"""Cheap data augmentation: what lets a small CNN generalise from ~2,500 clips to new speakers.

Waveform augmentations run in vectorised numpy once per epoch, before log-mel (so they are
physically right: noise adds in the signal domain): random time shift (±100 ms, zero fill),
random gain (dB), and mixing a background-noise clip (the ``_silence_`` recordings of the
training side) at a random SNR. Spectrogram augmentations run inside the jitted training step:
SpecAugment time and frequency masks, and mixup of pairs of examples and their labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from features.pcm import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (units in the names)."""

    speed_range: tuple[float, float] = (1.0, 1.0)
    """Speed perturbation factor (uniform): >1 plays faster and higher, like another speaker."""
    time_shift_ms: float = 100.0
    gain_db: tuple[float, float] = (-8.0, 6.0)
    noise_probability: float = 0.5
    noise_snr_db: tuple[float, float] = (5.0, 30.0)
    """SNR of the mixed noise relative to the window's own power, in dB (uniform)."""
    silence_noise_gain_db: tuple[float, float] = (-15.0, 5.0)
    """For ``_silence_`` windows SNR means little: the extra noise is scaled by this gain."""
    time_masks: int = 2
    time_mask_frames: int = 10
    freq_masks: int = 2
    freq_mask_bands: int = 5
    mixup_alpha: float = 0.0
    """Beta(α, α) mixing weight; 0 turns mixup off."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_AUGMENT = AugmentConfig(
    time_shift_ms=0.0,
    gain_db=(0.0, 0.0),
    noise_probability=0.0,
    time_masks=0,
    freq_masks=0,
    mixup_alpha=0.0,
)

_POWER_FLOOR = 1e-10


def augment_waveforms(
    windows: np.ndarray,
    is_silence: np.ndarray,
    noise_bank: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> np.ndarray:
    """A fresh augmented copy of ``windows`` ``[B, samples]`` (float32, 16 kHz)."""
    batch, samples = windows.shape
    out = windows.astype(np.float32, copy=True)
    if config.speed_range[1] > config.speed_range[0]:
        out = change_speed(out, np.asarray(rng.uniform(*config.speed_range, size=batch)))
    max_shift = int(config.time_shift_ms * SAMPLE_RATE_HZ / 1000)
    if max_shift > 0:
        padded = np.pad(out, ((0, 0), (max_shift, max_shift)))
        starts = np.asarray(rng.integers(0, 2 * max_shift + 1, size=batch))
        out = padded[np.arange(batch)[:, None], starts[:, None] + np.arange(samples)]
    low, high = config.gain_db
    if high > low:
        out *= (10.0 ** (rng.uniform(low, high, size=batch) / 20.0)).astype(np.float32)[:, None]
    if config.noise_probability > 0 and len(noise_bank):
        noisy = rng.random(batch) < config.noise_probability
        rows = np.flatnonzero(noisy)
        if rows.size:
            noise = noise_bank[rng.integers(0, len(noise_bank), size=rows.size)]
            offsets = rng.integers(0, noise.shape[1], size=rows.size)
            noise = noise[
                np.arange(rows.size)[:, None],
                (offsets[:, None] + np.arange(samples)) % noise.shape[1],
            ]
            signal_power = np.maximum(np.mean(out[rows] ** 2, axis=1), _POWER_FLOOR)
            noise_power = np.maximum(np.mean(noise**2, axis=1), _POWER_FLOOR)
            snr_db = rng.uniform(*config.noise_snr_db, size=rows.size)
            scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
            silent = is_silence[rows]
            scale[silent] = 10.0 ** (
                rng.uniform(*config.silence_noise_gain_db, size=silent.sum()) / 20.0
            )
            out[rows] += noise * scale.astype(np.float32)[:, None]
    return np.clip(out, -1.0, 1.0)


def change_speed(windows: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Resample each window by its factor about the window centre (linear interpolation).

    A factor of 1.1 plays 10 % faster and 10 % higher — a cheap stand-in for a speaker with a
    shorter vocal tract (speed perturbation, Ko et al. 2015). Samples that fall outside the
    source window are zero.
    """
    batch, samples = windows.shape
    centre = (samples - 1) / 2
    positions = centre + (np.arange(samples, dtype=np.float32) - centre)[None, :] * factors[:, None]
    left = np.floor(positions).astype(np.int64)
    fraction = (positions - left).astype(np.float32)
    inside = (positions >= 0) & (positions <= samples - 1)
    left = np.clip(left, 0, samples - 1)
    padded = np.pad(windows, ((0, 0), (0, 1)))
    rows = np.arange(batch)[:, None]
    out = padded[rows, left] * (1 - fraction) + padded[rows, left + 1] * fraction
    return np.where(inside, out, 0.0).astype(np.float32)


def spec_augment(
    key: jax.Array, logmel: jax.Array, fill: jax.Array, config: AugmentConfig
) -> jax.Array:
    """SpecAugment masks on ``[B, frames, mels]``; masked cells take ``fill`` ``[mels]``."""
    batch, frames, mels = logmel.shape
    mask = jnp.zeros((batch, frames, mels), dtype=bool)
    keys = jax.random.split(key, 2 * (config.time_masks + config.freq_masks) + 1)
    k = 0
    for axis_len, count, width, along_time in (
        (frames, config.time_masks, config.time_mask_frames, True),
        (mels, config.freq_masks, config.freq_mask_bands, False),
    ):
        positions = jnp.arange(axis_len)
        for _ in range(count):
            size = jax.random.randint(keys[k], (batch, 1), 0, width + 1)
            start = jax.random.randint(keys[k + 1], (batch, 1), 0, axis_len - width + 1)
            k += 2
            band = (positions[None, :] >= start) & (positions[None, :] < start + size)
            mask = mask | (band[:, :, None] if along_time else band[:, None, :])
    return jnp.where(mask, fill[None, None, :], logmel)


def mixup(
    key: jax.Array, logmel: jax.Array, targets: jax.Array, alpha: float
) -> tuple[jax.Array, jax.Array]:
    """Mix each example with a random partner: features and soft targets alike."""
    k_lam, k_perm = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha, (logmel.shape[0],))
    lam = jnp.maximum(lam, 1.0 - lam)  # the original example stays dominant
    partner = jax.random.permutation(k_perm, logmel.shape[0])
    mixed = lam[:, None, None] * logmel + (1 - lam[:, None, None]) * logmel[partner]
    return mixed, lam[:, None] * targets + (1 - lam[:, None]) * targets[partner]
