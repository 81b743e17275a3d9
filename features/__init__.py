"""Pure audio functions shared by training (batch) and serving (streaming).

Decode and resample (:mod:`features.pcm`), frame and log-mel (:mod:`features.spectral`), levels
and SNR (:mod:`features.levels`), window fitting (:mod:`features.window`), per-event summary
vectors (:mod:`features.summary`) and the real-recordings loader (:mod:`features.corpus`).
Nothing here reads settings or the environment.
"""

from features.levels import Levels, levels, snr_db
from features.spectral import (
    CLASSIFIER_WINDOW_SAMPLES,
    FEATURE_VERSION,
    N_MELS,
    WINDOW_FRAMES,
    LogMelStream,
    frame_signal,
    logmel,
    logmel_batch,
    mfcc,
)
from features.summary import SUMMARY_COLUMNS, summary_features, summary_features_batch
from features.window import fit_window, fit_windows

__all__ = [
    "CLASSIFIER_WINDOW_SAMPLES",
    "FEATURE_VERSION",
    "N_MELS",
    "SUMMARY_COLUMNS",
    "WINDOW_FRAMES",
    "Levels",
    "LogMelStream",
    "fit_window",
    "fit_windows",
    "frame_signal",
    "levels",
    "logmel",
    "logmel_batch",
    "mfcc",
    "snr_db",
    "summary_features",
    "summary_features_batch",
]
