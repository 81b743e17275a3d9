"""Shared fixtures: the real recordings split by speaker, a tiny trained model, its bundle.

Everything expensive is computed once per session: loading and fitting the clips, one quick
training run on a small subset of the training speakers, and the exported bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from features import logmel_batch
from features.corpus import SPEECH_COMMANDS, corpus_manifest
from models.bundle import calibration_rows, write_bundle
from models.dataset import LabelledWindows, split_by_group
from models.training import TrainedModel, preset, train

TRAIN_WINDOWS_PER_CLASS = 90
"""A small real subset (~1,000 windows) keeps the whole suite within its time budget."""
TINY_EPOCHS = 8


@dataclass
class Corpus:
    train: LabelledWindows
    heldout: LabelledWindows
    heldout_logmel: np.ndarray


@pytest.fixture(scope="session")
def corpus(shared_data: Path) -> Corpus:
    data = LabelledWindows.from_manifest(corpus_manifest(shared_data, SPEECH_COMMANDS))
    train_rows, test_rows = split_by_group(data.groups)
    train_set = data.subset(train_rows)
    rng = np.random.default_rng(0)
    subset = np.concatenate(
        [
            rng.permutation(np.flatnonzero(train_set.labels == label))[:TRAIN_WINDOWS_PER_CLASS]
            for label in np.unique(train_set.labels)
        ]
    )
    heldout = data.subset(test_rows)
    return Corpus(train_set.subset(np.sort(subset)), heldout, logmel_batch(heldout.windows))


@pytest.fixture(scope="session")
def tiny_model(corpus: Corpus) -> TrainedModel:
    return train(corpus.train, preset("quick", epochs=TINY_EPOCHS))


@pytest.fixture(scope="session")
def bundle(
    tiny_model: TrainedModel, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    calibration = corpus.train.windows[calibration_rows(corpus.train.labels, 96)]
    return write_bundle(
        tmp_path_factory.mktemp("bundle") / "kws",
        tiny_model,
        calibration,
        metrics={"accuracy": 0.0},
    )
