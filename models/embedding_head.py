"""A keyword classifier on pretrained speech embeddings: the served model that hears new voices.

Why this model: ~2,500 labelled clips are too few for a network trained from scratch to learn
what stays the same across voices (the TC-ResNet of :mod:`models.architecture` reaches 0.87 on
speakers it never heard). :mod:`features.speech_embedding` turns each 1-s window into
embeddings of a network trained on far more speech; a linear softmax on their mean and maximum
over time, trained here in seconds, reaches 0.93 on the same held-out speakers (docs/models.md).

Training: the training windows are embedded once (optionally ``augmented_copies`` times more
with the waveform augmentations of :mod:`models.augment`), the embeddings are pooled,
standardised with the clean windows' statistics, and the linear layer is fitted with AdamW
(weight decay as the regulariser), label smoothing and a cosine schedule. The embedding
network stays frozen: fine-tuning it on a few thousand windows would unlearn what it knows.

Export: one ONNX graph from audio to probabilities (the embedding graph, the pooling, the
standardisation and the linear layer), so a bundle of this model is served, quantized and
evaluated like any other; its manifest says ``"input_kind": "audio"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax
from onnx import TensorProto, helper, numpy_helper

from features.speech_embedding import EMBEDDING_DIM, SpeechEmbedder, embedding_graph
from features.window import CLASSIFIER_WINDOW_SAMPLES
from models.augment import AugmentConfig, augment_waveforms
from models.dataset import LABELS, SILENCE, LabelledWindows
from models.epochs import EpochReport

INPUT_KIND = "audio"
INPUT_NAME = "audio"
POOLED_DIM = 2 * EMBEDDING_DIM
"""Mean and maximum over time of each embedding value."""


@dataclass(frozen=True)
class HeadConfig:
    """Training knobs of the embedding classifier (the ``embedding`` preset)."""

    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augmented_copies: int = 0
    """Augmented copies of every training window embedded besides the clean one. Off: on the
    held-out speakers they cost 0.5–1.5 points (docs/models.md) — the frozen embeddings are
    already robust to what the augmentations imitate, and the copies dilute the real voices."""
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def ensemble(self) -> int:
        """Members averaged in the exported model: always one linear layer."""
        return 1

    def to_dict(self) -> dict[str, Any]:
        return {"model": "speech-embedding-linear", **asdict(self)}


@dataclass
class TrainedHead:
    """The fitted linear layer over pooled, standardised embeddings."""

    weights: np.ndarray
    """``[192, n_labels]``"""
    bias: np.ndarray
    mean: np.ndarray
    """Pooled-feature mean of the clean training windows (``[192]``)."""
    scale: np.ndarray
    """Pooled-feature standard deviation of the clean training windows (``[192]``)."""
    labels: tuple[str, ...]
    config: HeadConfig
    history: list[EpochReport]
    train_seconds: float
    n_train_windows: int
    input_kind: str = INPUT_KIND
    input_name: str = INPUT_NAME

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """``[B, n_labels]`` probabilities for 16-kHz windows ``[B, 16000]`` (float, ±1)."""
        pooled = pooled_embeddings(windows)
        return _softmax(_logits(pooled, self.mean, self.scale, self.weights, self.bias))

    def describe(self) -> dict[str, Any]:
        """The bundle manifest's ``architecture`` entry."""
        return {
            "model": "speech-embedding-linear",
            "embedding": "openWakeWord speech embedding (96), mean and max over time",
            "n_classes": len(self.labels),
            "ensemble": 1,
        }

    def save_onnx(self, path: Path) -> Path:
        """One graph: ``audio [B, 16000]`` → ``probs [B, n_labels]``."""
        from models.export import OUTPUT_NAME

        front = onnx.load_from_string(embedding_graph(CLASSIFIER_WINDOW_SAMPLES))
        graph = front.graph
        consts: dict[str, np.ndarray] = {
            "head_axis": np.array([1], np.int64),
            "head_mean": self.mean.astype(np.float32),
            "head_scale": self.scale.astype(np.float32),
            "head_w": self.weights.astype(np.float32),
            "head_b": self.bias.astype(np.float32),
        }
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
        nodes: list[tuple[str, list[str], str, dict[str, Any]]] = [
            ("ReduceMean", ["embeddings", "head_axis"], "head_avg", {"keepdims": 0}),
            ("ReduceMax", ["embeddings", "head_axis"], "head_peak", {"keepdims": 0}),
            ("Concat", ["head_avg", "head_peak"], "head_pooled", {"axis": 1}),
            ("Sub", ["head_pooled", "head_mean"], "head_centred", {}),
            ("Div", ["head_centred", "head_scale"], "head_z", {}),
            ("Gemm", ["head_z", "head_w", "head_b"], "head_logits", {}),
            ("Softmax", ["head_logits"], OUTPUT_NAME, {"axis": -1}),
        ]
        graph.node.extend(
            helper.make_node(op, ins, [out], name=out, **attrs) for op, ins, out, attrs in nodes
        )
        del graph.output[:]
        graph.output.append(
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(self.labels)]
            )
        )
        onnx.checker.check_model(front)
        onnx.save(front, str(path))
        return path


def pool(embeddings: np.ndarray) -> np.ndarray:
    """``[B, T, 96]`` → ``[B, 192]``: mean and maximum over time (as the exported graph)."""
    return np.concatenate([embeddings.mean(axis=1), embeddings.max(axis=1)], axis=1)


def _logits(
    pooled: np.ndarray, mean: np.ndarray, scale: np.ndarray, weights: Any, bias: Any
) -> np.ndarray:
    """The linear layer on standardised pooled embeddings (what the exported graph computes)."""
    return np.asarray(((pooled - mean) / scale) @ np.asarray(weights) + np.asarray(bias))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def pooled_embeddings(windows: np.ndarray) -> np.ndarray:
    """Pooled embeddings ``[N, 192]`` of windows ``[N, 16000]`` (the frozen network's output)."""
    return pool(SpeechEmbedder.shared().embed(windows))


@partial(jax.jit, static_argnums=(5,))
def _step(
    params: dict[str, jax.Array],
    opt_state: Any,
    x: jax.Array,
    targets: jax.Array,
    learning_rate: jax.Array,
    weight_decay: float,
) -> tuple[dict[str, jax.Array], Any, jax.Array, jax.Array]:
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss_fn(p: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        logits = x @ p["w"] + p["b"]
        return optax.softmax_cross_entropy(logits, targets).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == jnp.argmax(targets, axis=-1))
    return params, opt_state, loss, correct


def train_head(
    data: LabelledWindows,
    config: HeadConfig,
    *,
    labels: tuple[str, ...] = LABELS,
    noise_bank: np.ndarray | None = None,
    monitor: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainedHead:
    """Fit the linear layer on ``data`` (split before calling).

    ``monitor`` is ``(pooled embeddings [M, 192], label indices [M])``, scored after every
    epoch for the learning curves only. ``noise_bank`` defaults to ``data``'s ``_silence_``
    windows, as for the CNN.
    """
    if len(data) < config.batch_size:
        raise ValueError(f"{len(data)} windows is fewer than one batch of {config.batch_size}")
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    is_silence = (
        data.labels == labels.index(SILENCE) if SILENCE in labels else np.zeros(len(data), bool)
    )
    if noise_bank is None:
        noise_bank = data.windows[is_silence]
    clean = pooled_embeddings(data.windows)
    copies = [clean] + [
        pooled_embeddings(
            augment_waveforms(data.windows, is_silence, noise_bank, rng, config.augment)
        )
        for _ in range(config.augmented_copies)
    ]
    mean = clean.mean(axis=0)
    scale = np.maximum(clean.std(axis=0), 1e-6)
    x_all = (np.concatenate(copies) - mean) / scale
    y_all = np.tile(data.labels, len(copies))
    n_classes = len(labels)
    smooth = config.label_smoothing
    targets = np.full((len(y_all), n_classes), smooth / n_classes, dtype=np.float32)
    targets[np.arange(len(y_all)), y_all] += 1.0 - smooth

    steps_per_epoch = len(x_all) // config.batch_size
    schedule = optax.cosine_decay_schedule(config.learning_rate, steps_per_epoch * config.epochs)
    params = {
        "w": jnp.zeros((POOLED_DIM, n_classes), jnp.float32),
        "b": jnp.zeros((n_classes,), jnp.float32),
    }
    opt_state = optax.adamw(config.learning_rate, weight_decay=config.weight_decay).init(params)
    history: list[EpochReport] = []
    step_index = 0
    for epoch in range(config.epochs):
        epoch_started = time.perf_counter()
        order = rng.permutation(len(x_all))
        losses, corrects = [], []
        for batch in range(steps_per_epoch):
            rows = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            params, opt_state, loss, correct = _step(
                params,
                opt_state,
                jnp.asarray(x_all[rows]),
                jnp.asarray(targets[rows]),
                jnp.float32(schedule(step_index)),
                config.weight_decay,
            )
            step_index += 1
            losses.append(loss)
            corrects.append(correct)
        monitor_accuracy = None
        if monitor is not None and len(monitor[1]):
            logits = _logits(monitor[0], mean, scale, params["w"], params["b"])
            monitor_accuracy = float(np.mean(logits.argmax(axis=1) == monitor[1]))
        report = EpochReport(
            member=0,
            epoch=epoch + 1,
            epochs=config.epochs,
            loss=float(np.mean(jax.device_get(losses))),
            seconds=time.perf_counter() - epoch_started,
            accuracy=float(np.sum(jax.device_get(corrects)))
            / (steps_per_epoch * config.batch_size),
            monitor_accuracy=monitor_accuracy,
        )
        history.append(report)
        if on_epoch is not None:
            on_epoch(report)
    return TrainedHead(
        weights=np.asarray(params["w"], np.float32),
        bias=np.asarray(params["b"], np.float32),
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        labels=tuple(labels),
        config=config,
        history=history,
        train_seconds=time.perf_counter() - started,
        n_train_windows=len(data),
    )
