"""Loader for the real recordings: WAV + manifest, resampled to 16 kHz, split by speaker.

The corpora (Speech Commands subset, 16 kHz; FSDD, 8 kHz) ship with a ``manifest.csv`` whose
``path`` column is relative to the data root. A model's accuracy only means something on
speakers it never saw, so :func:`split_by_speaker` never puts one speaker on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.pcm import SAMPLE_RATE_HZ, decode_pcm16, resample, to_float

SPEECH_COMMANDS = "speech_commands"
FSDD = "fsdd"


class DataMissing(FileNotFoundError):
    """The real-data folder (or a corpus inside it) is not there."""


@dataclass(frozen=True)
class Clip:
    """One labelled recording from a manifest."""

    path: Path
    label: str
    speaker: str
    sample_rate: int
    split: str | None = None

    @property
    def clip_id(self) -> str:
        return self.path.stem


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Read a mono PCM16 WAV → (int16 samples, sample rate). Other formats raise ValueError."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        frames = wav.readframes(wav.getnframes())
        samples = decode_pcm16(frames)
        if wav.getnchannels() > 1:
            samples = samples.reshape(-1, wav.getnchannels())[:, 0]
        return samples.copy(), wav.getframerate()


def write_wav(path: Path | str, samples: np.ndarray, sample_rate: int) -> None:
    """Write int16 mono samples as a PCM16 WAV."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def load_audio(path: Path | str, to_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A WAV as float32 mono at ``to_hz``."""
    samples, rate = read_wav(path)
    return resample(to_float(samples), rate, to_hz)


def read_manifest(manifest: Path | str, data_root: Path | str | None = None) -> list[Clip]:
    """Clips of a manifest CSV (``path,label,…[,speaker][,split]``).

    ``path`` is resolved against ``data_root`` (default: the manifest's parent's parent, which is
    the data root for the shipped corpora), then against the manifest's own folder.
    """
    manifest = Path(manifest)
    if not manifest.exists():
        raise DataMissing(f"manifest {manifest} not found")
    roots = [Path(data_root)] if data_root else [manifest.parent.parent, manifest.parent]
    clips = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rel = Path(row["path"])
            path = next((r / rel for r in roots if (r / rel).exists()), roots[0] / rel)
            clips.append(
                Clip(
                    path=path,
                    label=row["label"],
                    speaker=row.get("speaker") or f"anon-{rel.stem}",
                    sample_rate=int(row.get("sample_rate") or 0),
                    split=row.get("split") or None,
                )
            )
    return clips


def corpus_manifest(data_dir: Path | str, corpus: str) -> Path:
    """Path of a shipped corpus's manifest, with a clear error when the data is absent."""
    manifest = Path(data_dir) / corpus / "manifest.csv"
    if not manifest.exists():
        raise DataMissing(
            f"{manifest} not found: point SONOLAKE_DATA_DIR at the folder holding "
            f"'{SPEECH_COMMANDS}/' and '{FSDD}/'"
        )
    return manifest


def _speaker_bucket(speaker: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{speaker}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_test_split(speaker: str, test_fraction: float = 0.2, seed: int = 0) -> bool:
    """Whether a speaker (or device, or any group id) falls on the test side of the split."""
    return _speaker_bucket(speaker, seed) < test_fraction


def split_by_speaker(
    clips: Sequence[Clip], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Clip], list[Clip]]:
    """Deterministic speaker-disjoint split: (train, test).

    Speakers are assigned by a hash of their id, so adding clips never moves a speaker to the
    other side. Clips without a speaker (background noise) are split per clip the same way.
    """
    train: list[Clip] = []
    test: list[Clip] = []
    for clip in clips:
        (test if in_test_split(clip.speaker, test_fraction, seed) else train).append(clip)
    return train, test


def load_clips(clips: Iterable[Clip], to_hz: int = SAMPLE_RATE_HZ) -> list[np.ndarray]:
    """Audio of each clip as float32 at ``to_hz`` (lengths vary)."""
    return [load_audio(clip.path, to_hz) for clip in clips]
