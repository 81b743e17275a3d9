"""Registry, gate and engine fixtures: real bundles, real MLflow stores, a real lake."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from serving_bundles import LABELS, fit_linear, random_linear, tone_windows, write_bundle

from lake_schemas import Lake
from models.dataset import HeldoutSet
from models.registry import Registry


@pytest.fixture(scope="session")
def tone_heldout() -> HeldoutSet:
    windows, labels = tone_windows(n_per_label=6, seed=101)
    return HeldoutSet("tones#heldout", windows, labels)


@pytest.fixture(scope="session")
def trained_weights() -> tuple[np.ndarray, np.ndarray]:
    windows, labels = tone_windows(n_per_label=12, seed=7)
    return fit_linear(windows, labels)


@pytest.fixture(scope="session")
def good_bundle(tmp_path_factory: pytest.TempPathFactory, trained_weights) -> Path:
    weights, bias = trained_weights
    return write_bundle(tmp_path_factory.mktemp("good"), weights, bias, accuracy=1.0)


@pytest.fixture(scope="session")
def weak_bundle(tmp_path_factory: pytest.TempPathFactory, trained_weights) -> Path:
    """The good model made deaf to four labels (their bias at -1000): right on ~8/12 tones."""
    weights, bias = (a.copy() for a in trained_weights)
    bias[:4] = -1000.0
    return write_bundle(tmp_path_factory.mktemp("weak"), weights, bias)


@pytest.fixture(scope="session")
def bad_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights, bias = random_linear(seed=11)
    return write_bundle(tmp_path_factory.mktemp("bad"), weights, bias)


@pytest.fixture(scope="session")
def dscnn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle written by the real exporter (DS-CNN, static-QDQ INT8, FP16), untrained:
    training takes minutes, and what matters here is the graph the engine must run."""
    import jax

    from features import logmel_batch
    from models.architecture import init
    from models.bundle import write_bundle as export_bundle
    from models.dataset import LABELS as MODEL_LABELS
    from models.training import TrainedModel, preset

    config = preset("quick")
    architecture = config.architecture(len(MODEL_LABELS))
    windows, _ = tone_windows(2, seed=3)
    features = logmel_batch(windows)
    params, state = init(
        jax.random.PRNGKey(0), architecture, features.mean(axis=(0, 1)), features.std(axis=(0, 1))
    )
    model = TrainedModel(architecture, [(params, state)], MODEL_LABELS, config, [], 0.0, 0)
    return export_bundle(tmp_path_factory.mktemp("dscnn") / "bundle", model, windows[:16])


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite MLflow store for the session: opening a store costs seconds (schema
    checks), so tests share it and keep apart by registering different model names."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    return uri


@pytest.fixture
def registry(tmp_path: Path, mlflow_store: str) -> Registry:
    """A registry of its own model name, writing evaluations into a fresh lake."""
    return Registry(
        mlflow_store,
        f"audio-event-classifier-{uuid.uuid4().hex[:8]}",
        tmp_path / "mlartifacts",
        cache_dir=tmp_path / "model-cache",
        lake=Lake(tmp_path / "lakehouse"),
    )


__all__ = ["LABELS"]
