"""Small but real model bundles for the serving tests, built with ``onnx.helper``.

The model is a linear softmax classifier over time-pooled log-mel: ``probs = softmax(mean_t(
logmel) · W + b)``, written as the three artifacts of the bundle contract (FP32, dynamically
quantized INT8 through ONNX Runtime's quantizer, FP16 weights with float32 inputs/outputs) with
the contract's tensor names. Trained with scikit-learn on synthetic tones (one pitch per label),
it really classifies, so the promotion gate has something to compare; with random weights it is
a poor model the gate must refuse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from features import CLASSIFIER_WINDOW_SAMPLES, FEATURE_VERSION, N_MELS, WINDOW_FRAMES, logmel_batch
from models.dataset import LABELS
from models.evaluation import SpeedProbe

TONE_HZ = tuple(250.0 * 1.3**i for i in range(len(LABELS)))
"""One pitch per label, 250 Hz to ~4.5 kHz: far enough apart for a linear model on log-mel."""
QUICK_SPEED = SpeedProbe(latency_runs=50, latency_rounds=1, warmup_runs=5, throughput_s=0.05)
"""Enough timing to exercise the gate's latency rule; benchmarks, not tests, measure speed."""
OPSET = 17
IR_VERSION = 9
"""ONNX Runtime 1.31 reads IR ≤ 13; onnx 1.23 writes 14 unless told otherwise."""


def tone_windows(
    n_per_label: int, seed: int, labels: Sequence[str] = LABELS
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Noisy 1-s tones at random level and phase: ``[N, 16000]`` float32 and their labels."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLASSIFIER_WINDOW_SAMPLES) / 16000.0
    windows, names = [], []
    for label, hz in zip(labels, TONE_HZ, strict=False):
        for _ in range(n_per_label):
            amplitude = rng.uniform(0.05, 0.5)
            tone = amplitude * np.sin(
                2 * np.pi * hz * rng.uniform(0.98, 1.02) * t + rng.uniform(0, 6.3)
            )
            windows.append(tone + rng.normal(0, 0.01, CLASSIFIER_WINDOW_SAMPLES))
            names.append(label)
    return np.asarray(windows, np.float32), tuple(names)


def fit_linear(windows: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on pooled log-mel → W [mels, labels], b [labels] in LABELS order."""
    from sklearn.linear_model import LogisticRegression

    pooled = logmel_batch(windows).mean(axis=1)
    clf = LogisticRegression(max_iter=500).fit(pooled, labels)
    order = [list(clf.classes_).index(label) for label in LABELS]
    return clf.coef_.T[:, order].astype(np.float32), clf.intercept_[order].astype(np.float32)


def random_linear(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (N_MELS, len(LABELS))).astype(np.float32), np.zeros(
        len(LABELS), np.float32
    )


def _graph(weights: np.ndarray, bias: np.ndarray, fp16: bool) -> onnx.ModelProto:
    dtype = np.float16 if fp16 else np.float32
    nodes, source = [], "logmel"
    if fp16:  # keep_io_types: float32 in and out, FP16 inside
        nodes.append(helper.make_node("Cast", ["logmel"], ["logmel16"], to=TensorProto.FLOAT16))
        source = "logmel16"
    nodes += [
        helper.make_node("ReduceMean", [source], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
        helper.make_node("Add", ["logits", "b"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probs16" if fp16 else "probs"], axis=-1),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", ["probs16"], ["probs"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "pooled-logmel-linear",
        [
            helper.make_tensor_value_info(
                "logmel", TensorProto.FLOAT, ["batch", WINDOW_FRAMES, N_MELS]
            )
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [
            numpy_helper.from_array(weights.astype(dtype), "W"),
            numpy_helper.from_array(bias.astype(dtype), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_bundle(folder: Path, weights: np.ndarray, bias: np.ndarray, **metrics: float) -> Path:
    """Write the three artifacts and model.json of a linear classifier into ``folder``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_graph(weights, bias, fp16=False), folder / "model.onnx")
    quantize_dynamic(folder / "model.onnx", folder / "model.int8.onnx", weight_type=QuantType.QInt8)
    onnx.save(_graph(weights, bias, fp16=True), folder / "model.fp16.onnx")
    (folder / "model.json").write_text(
        json.dumps(
            {
                "labels": list(LABELS),
                "feature_version": FEATURE_VERSION,
                "input_name": "logmel",
                "output_name": "probs",
                "sample_rate": 16000,
                "window_samples": CLASSIFIER_WINDOW_SAMPLES,
                "metrics": metrics,
            }
        )
    )
    return folder
