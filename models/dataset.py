"""Labelled 1-s windows: what training and evaluation consume, wherever the audio came from.

Training is fed arrays, not files: windows ``[N, 16000]`` float32 at 16 kHz, label indices into
:data:`LABELS`, and a group id per window (the speaker, or the device for audio replayed from
the lake: a device is a speaker there). Splitting by group keeps every speaker on one side, so
held-out accuracy measures speakers the model never heard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features import fit_window
from features.corpus import Clip, in_test_split, load_audio, read_manifest
from features.spectral import WINDOW_SAMPLES

LABELS: tuple[str, ...] = (
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
    "_unknown_",
    "_silence_",
)
"""The 12 output classes, in the model's output order."""
UNKNOWN = "_unknown_"
SILENCE = "_silence_"

SPLIT_TEST_FRACTION = 0.2
SPLIT_SEED = 0
"""The held-out side of every report: 20 % of speakers, hash seed 0 (fixed, so reports from
training, ``sonolake evaluate`` and the promotion gate all use the same speakers)."""


def label_index(label: str, labels: Sequence[str] = LABELS) -> int:
    """Index of ``label``; any word outside the vocabulary is ``_unknown_``."""
    try:
        return labels.index(label)
    except ValueError:
        return labels.index(UNKNOWN)


@dataclass(frozen=True)
class LabelledWindows:
    """Windows ``[N, 16000]`` float32, labels ``[N]`` int32 into :data:`LABELS`, groups ``[N]``."""

    windows: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        if self.windows.ndim != 2 or self.windows.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"windows must be [N, {WINDOW_SAMPLES}], got {self.windows.shape}")
        if not len(self.windows) == len(self.labels) == len(self.groups):
            raise ValueError("windows, labels and groups must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> LabelledWindows:
        return LabelledWindows(self.windows[rows], self.labels[rows], self.groups[rows])

    @classmethod
    def from_arrays(
        cls,
        windows: np.ndarray,
        labels: Iterable[str],
        groups: Iterable[str],
        vocabulary: Sequence[str] = LABELS,
    ) -> LabelledWindows:
        """From string labels (out-of-vocabulary words become ``_unknown_``)."""
        return cls(
            np.asarray(windows, dtype=np.float32),
            np.asarray([label_index(label, vocabulary) for label in labels], dtype=np.int32),
            np.asarray(list(groups), dtype=object),
        )

    @classmethod
    def from_clips(
        cls, clips: Sequence[Clip], vocabulary: Sequence[str] = LABELS
    ) -> LabelledWindows:
        """Load, resample to 16 kHz and fit each clip to the 1-s window."""
        windows = np.zeros((len(clips), WINDOW_SAMPLES), dtype=np.float32)
        for row, clip in enumerate(clips):
            windows[row] = fit_window(load_audio(clip.path))
        return cls.from_arrays(
            windows, (c.label for c in clips), (c.speaker for c in clips), vocabulary
        )

    @classmethod
    def from_manifest(cls, manifest: Path | str) -> LabelledWindows:
        return cls.from_clips(read_manifest(manifest))


def split_by_group(
    groups: np.ndarray, test_fraction: float = SPLIT_TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) with no group on both sides (same hash as the corpus split)."""
    in_test = {group: in_test_split(str(group), test_fraction, seed) for group in set(groups)}
    mask = np.fromiter((in_test[group] for group in groups), dtype=bool, count=len(groups))
    return np.flatnonzero(~mask), np.flatnonzero(mask)
