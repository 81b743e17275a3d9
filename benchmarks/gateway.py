"""``python -m benchmarks gateway``: N concurrent real-time streams through the gateway.

(benchmark body follows in the full version)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_")


def write_linear_bundle(folder: Path, seed: int = 0) -> Path:
    """A small, UNTRAINED model bundle in the bundle layout (FP32 ``model.onnx`` + ``model.json``).

    log-mel [B, frames, mels] → mean over frames → linear → softmax. Its labels mean nothing;
    it exists so the gateway's inference path (features, engine, batching, result messages)
    can be exercised and timed on a machine where no model has been trained yet.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from features import FEATURE_VERSION, N_MELS

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.5, (N_MELS, len(LABELS))).astype(np.float32)
    bias = rng.normal(0, 0.1, len(LABELS)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["logmel"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weights"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "linear_keyword_model",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", "frames", N_MELS])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    manifest = {
        "labels": list(LABELS),
        "feature_version": FEATURE_VERSION,
        "input_name": "logmel",
        "output_name": "probs",
        "sample_rate": 16000,
        "window_samples": 16000,
        "metrics": {"note": "untrained linear model for plumbing and timing"},
    }
    (folder / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder
