"""Fit a variable-length segment to the classifier's fixed 1-s window.

Speech events from the gateway, the lake and the corpora come in any length; the classifier
sees exactly :data:`~features.spectral.CLASSIFIER_WINDOW_SAMPLES` samples. A longer segment
keeps its loudest stretch (the window with the most energy), a shorter one is zero-padded so
its energy centroid sits at the window centre: a keyword that ends up half outside the window
is the commonest cause of a wrong label.
"""

from __future__ import annotations

import numpy as np

from features.spectral import CLASSIFIER_WINDOW_SAMPLES

SAMPLES_PER_MS = 16
"""Samples per millisecond of the 16 kHz stream clock."""
UTTERANCE_PRE_ROLL_MS = 200
"""Audio (ms) the classifier hears before an utterance's detected speech start: the VAD
confirms speech a window or two after the onset, and the onset carries the word's first sound."""
UTTERANCE_TAIL_MS = 100
"""Audio (ms) the classifier hears after an utterance's last speech window."""


def classified_span(start_sample: int, end_sample: int) -> tuple[int, int]:
    """``[start, end)`` samples of the 16 kHz stream the classifier hears for the utterance
    ``[start_sample, end_sample)``: with the pre-roll before and the tail after (start ≥ 0).

    The gateway classifies this live; every batch path that rebuilds an utterance's window
    (reprocessing, training sets read back from the lake) cuts the same span, or the model
    would learn on other windows than it is served.
    """
    return (
        max(0, start_sample - UTTERANCE_PRE_ROLL_MS * SAMPLES_PER_MS),
        end_sample + UTTERANCE_TAIL_MS * SAMPLES_PER_MS,
    )


def fit_window(audio: np.ndarray, samples: int = CLASSIFIER_WINDOW_SAMPLES) -> np.ndarray:
    """Crop or zero-pad ``audio`` to ``samples`` samples, centred on its energy (float32)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    length = audio.shape[0]
    if length == samples:
        return audio.copy()
    energy = np.square(audio, dtype=np.float64)
    if length > samples:
        cumulative = np.concatenate([[0.0], np.cumsum(energy)])
        window_energy = cumulative[samples:] - cumulative[:-samples]
        start = int(np.argmax(window_energy))
        return audio[start : start + samples].copy()
    total = energy.sum()
    centroid = float(np.dot(np.arange(length), energy) / total) if total > 0 else length / 2
    offset = round(samples / 2 - centroid)
    offset = min(max(offset, 0), samples - length)
    out = np.zeros(samples, dtype=np.float32)
    out[offset : offset + length] = audio
    return out


def fit_windows(segments: list[np.ndarray], samples: int = CLASSIFIER_WINDOW_SAMPLES) -> np.ndarray:
    """:func:`fit_window` over many segments → ``[len(segments), samples]`` float32."""
    out = np.zeros((len(segments), samples), dtype=np.float32)
    for row, segment in enumerate(segments):
        out[row] = fit_window(segment, samples)
    return out
