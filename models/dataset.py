"""Labelled 1-s windows: what training and evaluation consume, wherever the audio came from.

Training is fed arrays, not files: windows ``[N, 16000]`` float32 at 16 kHz, label indices into
:data:`LABELS`, and a group id per window (the speaker, or the device for audio replayed from
the lake: a device is a speaker there). Splitting by group keeps every speaker on one side, so
held-out accuracy measures speakers the model never heard. Evaluation is fed a
:class:`HeldoutSet`: windows, their labels as words, and a name that says where they came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features import fit_window
from features.corpus import Clip, in_test_split, load_audio, read_manifest
from features.spectral import CLASSIFIER_WINDOW_SAMPLES

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
        if self.windows.ndim != 2 or self.windows.shape[1] != CLASSIFIER_WINDOW_SAMPLES:
            raise ValueError(
                f"windows must be [N, {CLASSIFIER_WINDOW_SAMPLES}], got {self.windows.shape}"
            )
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
        return cls.from_arrays(
            clip_windows(clips), (c.label for c in clips), (c.speaker for c in clips), vocabulary
        )

    @classmethod
    def from_manifest(cls, manifest: Path | str) -> LabelledWindows:
        return cls.from_clips(read_manifest(manifest))


def clip_windows(clips: Sequence[Clip]) -> np.ndarray:
    """Each clip loaded, resampled to 16 kHz and fitted to the 1-s window: ``[N, 16000]``."""
    windows = np.zeros((len(clips), CLASSIFIER_WINDOW_SAMPLES), dtype=np.float32)
    for row, clip in enumerate(clips):
        windows[row] = fit_window(load_audio(clip.path))
    return windows


@dataclass(frozen=True)
class HeldoutSet:
    """Labelled 1-s windows (16 kHz float32) and a name that says where they came from.

    Labels are words; words outside a model's vocabulary count as ``_unknown_`` when scored.
    """

    name: str
    windows: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.windows.ndim != 2 or len(self.windows) != len(self.labels):
            raise ValueError("windows must be [N, samples] with one label per window")
        if not len(self.labels):
            raise ValueError(f"{self.name}: no labelled windows")


def manifest_name(manifest: Path) -> str:
    """``<corpus folder>/<file>``: how a manifest is named in reports and the lake."""
    return f"{manifest.parent.name}/{manifest.name}"


def heldout_side(
    clips: Sequence[Clip], test_fraction: float = SPLIT_TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[bool], str]:
    """Which clips are held out, and the suffix that names the rule.

    A manifest with a ``split`` column keeps its ``test`` rows; otherwise speakers are split
    exactly as training splits them (same fraction, same hash seed).
    """
    if any(clip.split for clip in clips):
        return [clip.split == "test" for clip in clips], "#split=test"
    held = [in_test_split(clip.speaker, test_fraction, seed) for clip in clips]
    return held, f"#heldout-speakers({test_fraction},{seed})"


def heldout_from_manifest(manifest: Path | str, *, heldout_only: bool = True) -> HeldoutSet:
    """Windows of a manifest's clips; with ``heldout_only``, only the held-out side.

    The score then never includes a speaker the model was trained on.
    """
    manifest = Path(manifest)
    clips = read_manifest(manifest)
    name = manifest_name(manifest)
    if heldout_only:
        held, suffix = heldout_side(clips)
        clips, name = [c for c, h in zip(clips, held, strict=True) if h], name + suffix
    return HeldoutSet(name, clip_windows(clips), tuple(clip.label for clip in clips))


@dataclass(frozen=True)
class CorpusSplit:
    """A labelled corpus split by speaker: what ``sonolake train`` trains and evaluates on."""

    train: LabelledWindows
    heldout: HeldoutSet
    heldout_speakers: int
    """Distinct speakers on the held-out side (noise clips carry a per-clip ``anon-`` id)."""

    def describe(self) -> dict[str, Any]:
        return {
            "train_windows": len(self.train),
            "test_windows": len(self.heldout.labels),
            "test_speakers": self.heldout_speakers,
        }


def corpus_split(manifest: Path | str) -> CorpusSplit:
    """Load every clip once and split it as :func:`heldout_from_manifest` does.

    The held-out side gets the same name the promotion gate and ``sonolake evaluate`` give it,
    so the accuracy training reports is the one they see.
    """
    manifest = Path(manifest)
    clips = read_manifest(manifest)
    held, suffix = heldout_side(clips)
    data = LabelledWindows.from_clips(clips)
    mask = np.asarray(held, dtype=bool)
    heldout_clips = [c for c, h in zip(clips, held, strict=True) if h]
    heldout = HeldoutSet(
        manifest_name(manifest) + suffix,
        data.windows[mask],
        tuple(clip.label for clip in heldout_clips),
    )
    speakers = {c.speaker for c in heldout_clips if not c.speaker.startswith("anon-")}
    return CorpusSplit(data.subset(np.flatnonzero(~mask)), heldout, len(speakers))


def split_by_group(
    groups: np.ndarray, test_fraction: float = SPLIT_TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) with no group on both sides (same hash as the corpus split)."""
    in_test = {group: in_test_split(str(group), test_fraction, seed) for group in set(groups)}
    mask = np.fromiter((in_test[group] for group in groups), dtype=bool, count=len(groups))
    return np.flatnonzero(~mask), np.flatnonzero(mask)
