"""A small named feature vector per audio event, for gold.audio_features and drift reports.

Drift monitoring compares distributions column by column, so every entry is a physically
meaningful scalar (levels in dBFS, frequencies in Hz, ratios in 0–1) rather than an opaque
embedding. The mel part pools the 40 log-mel bands into 8 groups of 5 (natural-log mel power),
enough to see a microphone or codec change (e.g. 8 kHz telephone audio loses the top groups).
"""

from __future__ import annotations

import numpy as np

from features.levels import levels, snr_db
from features.pcm import SAMPLE_RATE_HZ
from features.spectral import (
    FFT_SIZE,
    FRAME_SAMPLES,
    N_MELS,
    frame_signal,
    logmel_frames,
    power_spectrum,
)

MEL_GROUPS = 8
ROLLOFF_FRACTION = 0.85
"""Spectral roll-off: the frequency below which 85 % of the power lies."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "duration_s",
    "rms_dbfs",
    "peak_dbfs",
    "clipping_ratio",
    "snr_db",
    "zero_crossing_rate",
    "spectral_centroid_hz",
    "spectral_bandwidth_hz",
    "spectral_rolloff_hz",
    "spectral_flatness",
    "logmel_temporal_std",
    *(f"logmel_band_{group}" for group in range(MEL_GROUPS)),
)
"""Names of :func:`summary_features`' entries, in order (19 columns)."""

_BIN_HZ = np.fft.rfftfreq(FFT_SIZE, d=1.0 / SAMPLE_RATE_HZ)
_TINY = 1e-12


def summary_features(audio_16k: np.ndarray) -> np.ndarray:
    """The :data:`SUMMARY_COLUMNS` vector (float32) of one float32 16 kHz segment."""
    audio = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
    padded = (
        audio if audio.size >= FRAME_SAMPLES else np.pad(audio, (0, FRAME_SAMPLES - audio.size))
    )
    frames = frame_signal(padded)
    spectrum = power_spectrum(frames).astype(np.float64).mean(axis=0)
    total = spectrum.sum() + _TINY
    centroid = float(np.dot(_BIN_HZ, spectrum) / total)
    bandwidth = float(np.sqrt(np.dot((_BIN_HZ - centroid) ** 2, spectrum) / total))
    rolloff_bin = np.searchsorted(np.cumsum(spectrum), ROLLOFF_FRACTION * total)
    rolloff = float(_BIN_HZ[min(int(rolloff_bin), _BIN_HZ.size - 1)])
    flatness = float(np.exp(np.mean(np.log(spectrum + _TINY))) / (spectrum.mean() + _TINY))
    mel = logmel_frames(frames)
    band_means = mel.mean(axis=0).reshape(MEL_GROUPS, N_MELS // MEL_GROUPS).mean(axis=1)
    signs = np.signbit(audio)
    zcr = float(np.count_nonzero(signs[1:] != signs[:-1]) / max(audio.size - 1, 1))
    level = levels(audio)
    values = [
        audio.size / SAMPLE_RATE_HZ,
        level.rms_dbfs,
        level.peak_dbfs,
        level.clipping_ratio,
        snr_db(audio),
        zcr,
        centroid,
        bandwidth,
        rolloff,
        min(flatness, 1.0),
        float(mel.std(axis=0).mean()),
        *band_means.tolist(),
    ]
    return np.asarray(values, dtype=np.float32)


def summary_features_batch(segments: list[np.ndarray]) -> np.ndarray:
    """:func:`summary_features` of many segments → ``[len(segments), len(SUMMARY_COLUMNS)]``."""
    out = np.zeros((len(segments), len(SUMMARY_COLUMNS)), dtype=np.float32)
    for row, segment in enumerate(segments):
        out[row] = summary_features(segment)
    return out
