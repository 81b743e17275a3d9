"""Signal levels and a blind SNR estimate for float32 audio in [-1, 1).

dBFS here is relative to a full-scale square wave (RMS 1.0), so a full-scale sine reads
-3.01 dBFS RMS and 0 dBFS peak. Silence is floored at :data:`LEVEL_FLOOR_DBFS` rather than
-inf so the values stay storable and comparable in the lake.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL_FLOOR_DBFS = -120.0
"""Level reported for digital silence (and anything quieter)."""
CLIP_THRESHOLD = 32767.0 / 32768.0
"""A sample at or beyond this magnitude sat at the PCM16 rail."""
SNR_FRAME_SAMPLES = 320
"""20 ms frames at 16 kHz for the SNR estimate (any rate works; only the ratio matters)."""
SNR_NOISE_PERCENTILE = 10.0
SNR_SIGNAL_PERCENTILE = 90.0
SNR_MAX_DB = 100.0

_FLOOR_POWER = 10.0 ** (LEVEL_FLOOR_DBFS / 10.0)


@dataclass(frozen=True)
class Levels:
    """RMS and peak level in dBFS, and the fraction of samples at the rail (0–1)."""

    rms_dbfs: float
    peak_dbfs: float
    clipping_ratio: float


def power_to_db(power: np.ndarray | float) -> np.ndarray | float:
    """10·log10 of a power, floored at :data:`LEVEL_FLOOR_DBFS`."""
    return 10.0 * np.log10(np.maximum(power, _FLOOR_POWER))


def levels(audio: np.ndarray) -> Levels:
    """RMS/peak dBFS and clipping ratio of one signal (empty → floor levels, ratio 0)."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.size == 0:
        return Levels(LEVEL_FLOOR_DBFS, LEVEL_FLOOR_DBFS, 0.0)
    magnitude = np.abs(samples)
    mean_power = float(np.mean(np.square(samples, dtype=np.float64)))
    peak = float(magnitude.max())
    return Levels(
        rms_dbfs=float(power_to_db(mean_power)),
        peak_dbfs=float(power_to_db(peak * peak)),
        clipping_ratio=float(np.count_nonzero(magnitude >= CLIP_THRESHOLD) / samples.size),
    )


def snr_db(audio: np.ndarray, frame_samples: int = SNR_FRAME_SAMPLES) -> float:
    """Blind SNR in dB from the spread of short-frame powers, in [0, 100].

    The quiet frames (10th percentile of 20 ms frame power) stand for the noise floor and the
    loud frames (90th percentile) for signal plus noise; SNR = 10·log10((loud − quiet) / quiet).
    A signal with no quiet stretch (stationary noise, a steady tone) reads ~0 dB: there is
    nothing to tell signal from noise. Clips shorter than two frames read 0 dB.
    """
    samples = np.asarray(audio, dtype=np.float64)
    n_frames = samples.size // frame_samples
    if n_frames < 2:
        return 0.0
    power = np.mean(np.square(samples[: n_frames * frame_samples].reshape(n_frames, -1)), axis=1)
    quiet, loud = np.percentile(power, [SNR_NOISE_PERCENTILE, SNR_SIGNAL_PERCENTILE])
    quiet = max(float(quiet), _FLOOR_POWER)
    signal = max(float(loud) - quiet, _FLOOR_POWER)
    return float(np.clip(10.0 * np.log10(signal / quiet), 0.0, SNR_MAX_DB))
