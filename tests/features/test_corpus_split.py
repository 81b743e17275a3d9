"""The speaker split on the real recordings: no speaker on both sides, for clips and windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.corpus import SPEECH_COMMANDS, corpus_manifest, read_manifest, split_by_speaker
from models.dataset import LABELS, LabelledWindows, label_index, split_by_group


def test_no_speaker_on_both_sides(shared_data: Path) -> None:
    clips = read_manifest(corpus_manifest(shared_data, SPEECH_COMMANDS))
    assert len(clips) == 3169
    train, test = split_by_speaker(clips, test_fraction=0.2, seed=0)
    assert not {c.speaker for c in train} & {c.speaker for c in test}
    assert 0.12 < len(test) / len(clips) < 0.28
    assert {c.label for c in test} == set(LABELS)  # every class is represented on the held-out side


def test_group_split_matches_the_clip_split(shared_data: Path) -> None:
    clips = read_manifest(corpus_manifest(shared_data, SPEECH_COMMANDS))
    groups = np.asarray([c.speaker for c in clips], dtype=object)
    train_rows, test_rows = split_by_group(groups)
    _, test_clips = split_by_speaker(clips)
    assert {clips[i].path for i in test_rows} == {c.path for c in test_clips}
    assert not set(groups[train_rows]) & set(groups[test_rows])


def test_windows_from_arrays_map_unknown_words() -> None:
    windows = np.zeros((3, 16_000), np.float32)
    data = LabelledWindows.from_arrays(windows, ["yes", "marvin", "_silence_"], ["a", "b", "c"])
    assert data.labels.tolist() == [0, label_index("_unknown_"), label_index("_silence_")]
    assert len(data.subset(np.array([0, 2]))) == 2
