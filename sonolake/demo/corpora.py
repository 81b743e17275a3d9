"""What the demo replays: the real recordings, or labelled synthetic audio when they are absent.

Three manifests, written under the demo's state folder with absolute paths:

``training``
    Speech Commands clips (every speaker, both sides of the speaker split, with labels): what
    the first replay lands and the first model learns from.
``serving``
    Clips of held-out speakers only, replayed a second time at real-time pace: the served model
    has never heard these voices, so the accuracy the clients see is honest. Training from the
    lake holds out *devices* (:mod:`models.lake_dataset`); the replay streams each speaker as
    the device :func:`streaming.replay.device_id_for` names, so the held-out speakers are those
    whose device falls on the held-out side.
``drift``
    FSDD: spoken digits from a telephone channel (8 kHz, replayed as mu-law). Another microphone,
    band and vocabulary: a real distribution shift for the drift report.

Without the real recordings the same three roles are filled by generated audio (harmonic
"words" per label with a per-speaker pitch, noise for ``_silence_``, band-limited 8 kHz digits
for drift), and the summary says so.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.corpus import (
    FSDD,
    SPEECH_COMMANDS,
    Clip,
    DataMissing,
    corpus_manifest,
    in_test_split,
    read_manifest,
    write_wav,
)
from features.pcm import to_pcm16
from models.dataset import LABELS
from streaming.replay import device_id_for

MANIFEST_COLUMNS = ("path", "label", "speaker", "sample_rate")


@dataclass(frozen=True)
class DemoCorpora:
    training: Path
    serving: Path
    drift: Path
    synthetic: bool
    training_clips: int
    serving_clips: int
    drift_clips: int


def write_manifest(path: Path, clips: Sequence[Clip]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for clip in clips:
            writer.writerow([str(clip.path.resolve()), clip.label, clip.speaker, clip.sample_rate])
    return path


def _interleave(clips: Sequence[Clip], limit: int) -> list[Clip]:
    """Up to ``limit`` clips, taken round-robin over speakers (each speaker one session)."""
    by_speaker: dict[str, list[Clip]] = {}
    for clip in sorted(clips, key=lambda c: (c.speaker, c.path)):
        by_speaker.setdefault(clip.speaker, []).append(clip)
    chosen: list[Clip] = []
    while len(chosen) < limit and any(by_speaker.values()):
        for speaker in sorted(by_speaker):
            if by_speaker[speaker] and len(chosen) < limit:
                chosen.append(by_speaker[speaker].pop(0))
    return chosen


def real_corpora(
    data_dir: Path,
    out_dir: Path,
    *,
    training_limit: int | None,
    serving_limit: int,
    drift_limit: int,
) -> DemoCorpora:
    """Manifests over the real recordings; raises DataMissing when they are not there."""
    speech = read_manifest(corpus_manifest(data_dir, SPEECH_COMMANDS))
    digits = read_manifest(corpus_manifest(data_dir, FSDD))
    training = speech if training_limit is None else _interleave(speech, training_limit)
    return _corpora(out_dir, training, speech, digits, serving_limit, drift_limit, synthetic=False)


# ---------------------------------------------------------------------------- synthetic audio
SYNTH_RATE_HZ = 16_000
SYNTH_DRIFT_RATE_HZ = 8_000
SYNTH_SPEAKERS = 40
SYNTH_CLIPS_PER_LABEL = 6


def _word(label_index: int, pitch_hz: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    """A 0.6-s harmonic "word": two formant-like partials per label, a syllable envelope."""
    duration_s = 0.6
    t = np.arange(int(duration_s * rate)) / rate
    first = 300.0 + 140.0 * label_index
    second = 1200.0 + 210.0 * ((label_index * 5) % 11)
    voice = sum(np.sin(2 * np.pi * k * pitch_hz * t) / k for k in range(1, 4))
    formants = np.sin(2 * np.pi * first * t) + 0.6 * np.sin(2 * np.pi * second * t)
    envelope = np.sin(np.pi * t / duration_s) ** 2
    signal = 0.25 * envelope * (0.4 * voice + formants) * rng.uniform(0.5, 1.2)
    silence = np.zeros(int(0.2 * rate))
    return np.concatenate([silence, signal, silence])


def _synthetic_clip(label: str, pitch: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    noise = rng.normal(0, 0.01, int(1.0 * rate))
    if label == "_silence_":
        return np.clip(noise * rng.uniform(0.5, 3.0), -1, 1)
    index = LABELS.index(label) if label in LABELS else 12 + int(rng.integers(0, 8))
    word = _word(index, pitch, rng, rate)
    out = noise.copy()
    out[: min(word.size, out.size)] += word[: out.size]
    return np.clip(out, -1, 1)


def synthetic_corpora(out_dir: Path, *, serving_limit: int, drift_limit: int) -> DemoCorpora:
    """Generated, labelled audio in the same three roles (see the module docstring)."""
    rng = np.random.default_rng(7)
    audio_dir = out_dir / "synthetic"
    speech: list[Clip] = []
    for speaker_index in range(SYNTH_SPEAKERS):
        speaker = f"synth{speaker_index:02d}"
        pitch = 90.0 + 4.0 * speaker_index
        for label in LABELS:
            for take in range(SYNTH_CLIPS_PER_LABEL // 2):
                path = audio_dir / "speech" / f"{speaker}-{label}-{take}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_wav(
                    path, to_pcm16(_synthetic_clip(label, pitch, rng, SYNTH_RATE_HZ)), SYNTH_RATE_HZ
                )
                speech.append(Clip(path, label, speaker, SYNTH_RATE_HZ))
    digits: list[Clip] = []
    for speaker_index in range(6):
        speaker = f"phone{speaker_index}"
        for take in range(max(1, drift_limit // 6)):
            digit = str(take % 10)
            samples = _word(40 + int(digit), 160.0 + 20 * speaker_index, rng, SYNTH_DRIFT_RATE_HZ)
            samples = np.clip(samples * 2.5 + rng.normal(0, 0.03, samples.size), -1, 1)
            path = audio_dir / "digits" / f"{digit}_{speaker}_{take}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, to_pcm16(samples), SYNTH_DRIFT_RATE_HZ)
            digits.append(Clip(path, digit, speaker, SYNTH_DRIFT_RATE_HZ))
    return _corpora(out_dir, speech, speech, digits, serving_limit, drift_limit, synthetic=True)


def _corpora(
    out_dir: Path,
    training: list[Clip],
    speech: list[Clip],
    digits: list[Clip],
    serving_limit: int,
    drift_limit: int,
    *,
    synthetic: bool,
) -> DemoCorpora:
    """Write the three manifests: serving replays only held-out speakers, drift the digits."""
    heldout = [
        c for c in speech if c.label != "_silence_" and in_test_split(device_id_for(c.speaker))
    ]
    serving = _interleave(heldout, serving_limit)
    drift = _interleave(digits, drift_limit)
    return DemoCorpora(
        training=write_manifest(out_dir / "training.csv", training),
        serving=write_manifest(out_dir / "serving.csv", serving),
        drift=write_manifest(out_dir / "drift.csv", drift),
        synthetic=synthetic,
        training_clips=len(training),
        serving_clips=len(serving),
        drift_clips=len(drift),
    )


def demo_corpora(
    data_dir: Path,
    out_dir: Path,
    *,
    training_limit: int | None,
    serving_limit: int,
    drift_limit: int,
) -> DemoCorpora:
    """The real recordings when present, otherwise generated audio."""
    try:
        return real_corpora(
            data_dir,
            out_dir,
            training_limit=training_limit,
            serving_limit=serving_limit,
            drift_limit=drift_limit,
        )
    except DataMissing:
        return synthetic_corpora(out_dir, serving_limit=serving_limit, drift_limit=drift_limit)
