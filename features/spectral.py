"""Framing, log-mel and MFCC: the model's input, computed the same way for batch and stream.

One frame is 25 ms (400 samples) of 16 kHz audio every 10 ms (160 samples), Hann-windowed,
zero-padded to a 512-point FFT, its power spectrum summed into 40 triangular mel bands (HTK mel
scale, 20 Hz–8 kHz) and logged. Framing has no centring or padding: frame ``i`` covers samples
``[i·160, i·160 + 400)``, so a 1-s window (16,000 samples) gives exactly 98 frames and a stream
can emit each frame as soon as its last sample arrives. :class:`LogMelStream` keeps the
unconsumed tail between chunks and runs the very same per-frame code as :func:`logmel_batch`,
which is what makes chunked output equal batch output (no train/serve skew).

Bump :data:`FEATURE_VERSION` whenever any number here changes: models and lake rows carry it.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType

import numpy as np

from features.pcm import SAMPLE_RATE_HZ

FEATURE_VERSION = "logmel40-25ms-10ms-v1"
"""Identifies every number below; stored in model.json and in gold.audio_features rows."""

CLASSIFIER_WINDOW_SAMPLES = SAMPLE_RATE_HZ
"""The classifier's input window: 1 s at 16 kHz (the VAD's 32-ms window is another thing)."""
FRAME_SAMPLES = 400
"""25 ms analysis frame at 16 kHz."""
HOP_SAMPLES = 160
"""10 ms hop at 16 kHz."""
FFT_SIZE = 512
N_MELS = 40
MEL_FMIN_HZ = 20.0
MEL_FMAX_HZ = SAMPLE_RATE_HZ / 2
LOG_FLOOR = 1e-6
"""Added to mel power before the log, so digital silence reads log(1e-6) ≈ -13.8, not -inf."""
N_MFCC = 13


def frames_in(samples: int) -> int:
    """Number of whole frames in ``samples`` samples (98 for a 1-s window)."""
    return 0 if samples < FRAME_SAMPLES else 1 + (samples - FRAME_SAMPLES) // HOP_SAMPLES


WINDOW_FRAMES = frames_in(CLASSIFIER_WINDOW_SAMPLES)
"""Frames per model window (98)."""


def frame_signal(audio: np.ndarray) -> np.ndarray:
    """A read-only view ``[..., frames, FRAME_SAMPLES]`` of the whole frames of ``audio``."""
    audio = np.asarray(audio, dtype=np.float32)
    n_frames = frames_in(audio.shape[-1])
    if n_frames == 0:
        return np.zeros((*audio.shape[:-1], 0, FRAME_SAMPLES), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(audio, FRAME_SAMPLES, axis=-1)
    return view[..., ::HOP_SAMPLES, :][..., :n_frames, :]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS) -> np.ndarray:
    """Triangular HTK-mel filters ``[FFT_SIZE // 2 + 1, n_mels]`` (peak 1), float32."""
    edges_hz = _mel_to_hz(
        np.linspace(
            _hz_to_mel(np.array(MEL_FMIN_HZ)), _hz_to_mel(np.array(MEL_FMAX_HZ)), n_mels + 2
        )
    )
    bins_hz = np.fft.rfftfreq(FFT_SIZE, d=1.0 / SAMPLE_RATE_HZ)
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bins_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bins_hz[:, None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank.setflags(write=False)
    return bank.astype(np.float32)


@lru_cache(maxsize=1)
def _analysis_window() -> np.ndarray:
    """The periodic ("FFT") Hann window of one frame, float32.

    Written out instead of ``scipy.signal.get_window("hann", 400)``: same values (tested), and
    importing scipy.signal costs about a second per process start.
    """
    n = np.arange(FRAME_SAMPLES, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / FRAME_SAMPLES)).astype(np.float32)
    window.setflags(write=False)
    return window


def _fft() -> ModuleType:
    """``scipy.fft``, imported on first use: ``import features`` stays cheap for processes
    (the gateway's workers, the CLI) that only decode or resample."""
    import scipy.fft

    return scipy.fft


def windowed_frames(audio: np.ndarray) -> np.ndarray:
    """Hann-windowed frames zero-padded to the FFT size: ``[..., frames, FFT_SIZE]`` float32.

    Built from hop-sized blocks (a frame is blocks i, i+1 and the first 80 samples of i+2),
    which reads memory in order: about 3× faster than multiplying a strided frame view.
    """
    audio = np.asarray(audio, dtype=np.float32)
    n_frames = frames_in(audio.shape[-1])
    lead = audio.shape[:-1]
    out = np.zeros((*lead, n_frames, FFT_SIZE), dtype=np.float32)
    if n_frames == 0:
        return out
    n_blocks = n_frames + _BLOCKS_PER_FRAME - 1
    needed = n_blocks * HOP_SAMPLES
    if audio.shape[-1] < needed:  # only the unread tail of the last block is padded
        audio = np.pad(audio, [(0, 0)] * len(lead) + [(0, needed - audio.shape[-1])])
    blocks = audio[..., :needed].reshape(*lead, n_blocks, HOP_SAMPLES)
    window = _analysis_window()
    for k in range(_BLOCKS_PER_FRAME):
        lo, hi = k * HOP_SAMPLES, min((k + 1) * HOP_SAMPLES, FRAME_SAMPLES)
        np.multiply(blocks[..., k : k + n_frames, : hi - lo], window[lo:hi], out=out[..., lo:hi])
    return out


_BLOCKS_PER_FRAME = -(-FRAME_SAMPLES // HOP_SAMPLES)


def power_spectrum(frames: np.ndarray) -> np.ndarray:
    """Hann-windowed power spectrum ``[..., FFT_SIZE // 2 + 1]`` of raw frames ``[..., 400]``."""
    return _power(_fft().rfft(frames * _analysis_window(), n=FFT_SIZE, axis=-1))


def _power(spectrum: np.ndarray) -> np.ndarray:
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    return power.astype(np.float32, copy=False)


def _log_mel(power: np.ndarray, n_mels: int) -> np.ndarray:
    mel = power @ mel_filterbank(n_mels)
    mel += LOG_FLOOR
    return np.log(mel, out=mel).astype(np.float32, copy=False)


def logmel_frames(frames: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel of raw frames ``[..., 400]`` → ``[..., n_mels]``."""
    return _log_mel(power_spectrum(frames), n_mels)


def logmel_signal(audio: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel of the whole frames of ``audio`` ``[..., samples]`` → ``[..., frames, n_mels]``.

    The one code path behind :func:`logmel`, :func:`logmel_batch` and :class:`LogMelStream`.
    """
    return _log_mel(_power(_fft().rfft(windowed_frames(audio), axis=-1)), n_mels)


_BATCH_CHUNK = 256
"""Windows per FFT call in :func:`logmel_batch`: keeps temporaries to a few tens of MB."""


def logmel(audio_16k: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel of one float32 16 kHz signal → ``[frames, n_mels]`` (98 frames for 1 s)."""
    return logmel_signal(audio_16k, n_mels)


def logmel_batch(windows: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel of equal-length windows ``[B, samples]`` → ``[B, frames, n_mels]`` float32."""
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2:
        raise ValueError(f"windows must be [batch, samples], got shape {windows.shape}")
    out = np.empty((windows.shape[0], frames_in(windows.shape[1]), n_mels), dtype=np.float32)
    for start in range(0, windows.shape[0], _BATCH_CHUNK):
        out[start : start + _BATCH_CHUNK] = logmel_signal(
            windows[start : start + _BATCH_CHUNK], n_mels
        )
    return out


def mfcc(audio_16k: np.ndarray, n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> np.ndarray:
    """MFCCs ``[frames, n_mfcc]``: orthonormal DCT-II of the log-mel bands."""
    return _fft().dct(logmel(audio_16k, n_mels), type=2, norm="ortho", axis=-1)[:, :n_mfcc]


class LogMelStream:
    """Chunked front end: push audio of any length, get the log-mel frames it completes.

    Keeps the last ``FRAME_SAMPLES - HOP_SAMPLES`` (+ remainder) samples between pushes, so the
    frames emitted over a whole stream are exactly the frames :func:`logmel` computes on the
    concatenated audio. ``history_frames`` bounds :meth:`recent` (the newest frames, e.g. the
    98 that make up the current 1-s window).
    """

    def __init__(self, n_mels: int = N_MELS, history_frames: int = WINDOW_FRAMES) -> None:
        self.n_mels = n_mels
        self.history_frames = history_frames
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._history = np.zeros((0, self.n_mels), dtype=np.float32)
        self.frames_emitted = 0

    def push(self, chunk_16k: np.ndarray) -> np.ndarray:
        """Feed float32 16 kHz samples; return the new frames ``[n, n_mels]`` (n may be 0)."""
        audio = np.concatenate([self._pending, np.asarray(chunk_16k, dtype=np.float32)])
        n_frames = frames_in(audio.shape[0])
        frames = logmel_signal(audio, self.n_mels)
        self._pending = audio[n_frames * HOP_SAMPLES :].copy()
        self.frames_emitted += n_frames
        if self.history_frames > 0 and n_frames:
            self._history = np.concatenate([self._history, frames])[-self.history_frames :]
        return frames

    def recent(self, n_frames: int = WINDOW_FRAMES) -> np.ndarray:
        """The newest ``n_frames`` frames (fewer at the start of a stream)."""
        return self._history[-n_frames:].copy()
