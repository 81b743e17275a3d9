"""Export a trained DS-CNN to ONNX: FP32, INT8 (CPU/edge) and FP16 (GPU).

The FP32 graph is built with ``onnx.helper`` straight from the parameter pytree rather than by
tracing JAX (jax2onnx would add a dependency tree for a graph of six op types). Each batch norm
is folded into the convolution before it (``w' = w·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``),
so the graph is just Sub/Mul (input normalisation), Conv, Relu, GlobalAveragePool, Gemm and
Softmax; an ensemble averages its members' softmax outputs with one ``Mean`` node. ONNX
Runtime's output equals the JAX forward pass to float32 rounding (tested).

INT8 is static QDQ quantization (:func:`quantize_int8`): activations uint8 / weights int8
per output channel, ranges calibrated on clean training windows. Static beats dynamic here: a
CNN's cost is its convolutions, and dynamic quantization only covers MatMul/Gemm-like ops well;
static QDQ lets ONNX Runtime fuse each DQ→Conv→Relu→Q into one QLinearConv on u8s8 kernels.

FP16 keeps float32 inputs and outputs (``keep_io_types``) so callers feed the same arrays to
every artifact; it is meant for the CUDA provider (on CPU, FP16 falls back to casts).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from features.spectral import WINDOW_FRAMES
from models.architecture import BN_EPSILON, ArchitectureConfig, Params, State, same_padding

INPUT_NAME = "logmel"
OUTPUT_NAME = "probs"
OPSET = 17
IR_VERSION = 9
"""Opset 17 / IR 9: read by every ONNX Runtime from 1.15 on, and by the quantization tools."""
CALIBRATION_BATCH = 32


def _fold(w_oihw: np.ndarray, bias: np.ndarray | None, bn: dict, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference-mode batch norm into a convolution (OIHW weights)."""
    scale = np.asarray(bn["gamma"]) / np.sqrt(np.asarray(stats["var"]) + BN_EPSILON)
    base = np.zeros_like(scale) if bias is None else np.asarray(bias)
    folded_w = np.asarray(w_oihw) * scale[:, None, None, None]
    folded_b = (base - np.asarray(stats["mean"])) * scale + np.asarray(bn["beta"])
    return folded_w.astype(np.float32), folded_b.astype(np.float32)


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output


def _member_graph(
    g: _GraphBuilder, prefix: str, params: Params, state: State, arch: ArchitectureConfig
) -> str:
    """Nodes of one member; returns the name of its softmax output."""
    x = g.node(
        "Sub", [INPUT_NAME, g.const(f"{prefix}band_mean", np.asarray(state["band_mean"]))], f"{prefix}centred"
    )
    x = g.node("Mul", [x, g.const(f"{prefix}band_scale", np.asarray(state["band_scale"]))], f"{prefix}normalised")
    x = g.node("Unsqueeze", [x, g.const(f"{prefix}axis1", np.array([1], dtype=np.int64))], f"{prefix}image")
    height, width = WINDOW_FRAMES, arch.n_mels

    def conv(x: str, name: str, w: np.ndarray, b: np.ndarray, stride: tuple[int, int], groups: int) -> str:
        nonlocal height, width
        kernel = w.shape[2:]
        pad_h = same_padding(height, kernel[0], stride[0])
        pad_w = same_padding(width, kernel[1], stride[1])
        height, width = -(-height // stride[0]), -(-width // stride[1])
        out = g.node(
            "Conv",
            [x, g.const(f"{prefix}{name}.w", w), g.const(f"{prefix}{name}.b", b)],
            f"{prefix}{name}",
            kernel_shape=list(kernel),
            strides=list(stride),
            pads=[pad_h[0], pad_w[0], pad_h[1], pad_w[1]],
            group=groups,
        )
        return g.node("Relu", [out], f"{prefix}{name}.relu")

    w0 = np.transpose(np.asarray(params["conv0"]["w"]), (3, 2, 0, 1))
    x = conv(x, "conv0", *_fold(w0, params["conv0"]["b"], params["bn0"], state["bn0"]), arch.first_stride, 1)
    for index, (block, stats, stride) in enumerate(
        zip(params["blocks"], state["blocks"], arch.block_strides, strict=True)
    ):
        dw = np.transpose(np.asarray(block["dw"]), (2, 0, 1))[:, None, :, :]
        x = conv(x, f"block{index}.dw", *_fold(dw, None, block["bn_dw"], stats["bn_dw"]), stride, arch.width)
        pw = np.asarray(block["pw"]).T[:, :, None, None]
        x = conv(x, f"block{index}.pw", *_fold(pw, None, block["bn_pw"], stats["bn_pw"]), (1, 1), 1)
    x = g.node("GlobalAveragePool", [x], f"{prefix}pool")
    x = g.node("Flatten", [x], f"{prefix}embedding", axis=1)
    x = g.node(
        "Gemm",
        [
            x,
            g.const(f"{prefix}head.w", np.asarray(params["head"]["w"], np.float32)),
            g.const(f"{prefix}head.b", np.asarray(params["head"]["b"], np.float32)),
        ],
        f"{prefix}logits",
    )
    return g.node("Softmax", [x], f"{prefix}softmax", axis=-1)


def build_onnx(members: Sequence[tuple[Params, State]], arch: ArchitectureConfig) -> onnx.ModelProto:
    """The FP32 ONNX model of one DS-CNN or an ensemble (mean of member probabilities)."""
    g = _GraphBuilder()
    outputs = [
        _member_graph(g, f"m{index}." if len(members) > 1 else "", params, state, arch)
        for index, (params, state) in enumerate(members)
    ]
    if len(outputs) == 1:
        g.node("Identity", outputs, OUTPUT_NAME)
    else:
        g.node("Mean", outputs, OUTPUT_NAME)
    graph = helper.make_graph(
        g.nodes,
        "keyword_spotting_dscnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", WINDOW_FRAMES, arch.n_mels])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", arch.n_classes])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sonolake"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save_fp32(members: Sequence[tuple[Params, State]], arch: ArchitectureConfig, path: Path) -> Path:
    onnx.save(build_onnx(members, arch), str(path))
    return path


class _LogmelReader:
    """Calibration feed for ``quantize_static``: batches of log-mel ``[32, frames, mels]``."""

    def __init__(self, logmel: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [logmel[s : s + CALIBRATION_BATCH] for s in range(0, len(logmel), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}

    def rewind(self) -> None:  # pragma: no cover - quantize_static reads once
        raise NotImplementedError


def quantize_int8(fp32_path: Path, int8_path: Path, calibration_logmel: np.ndarray) -> Path:
    """Static QDQ INT8 (u8 activations, s8 per-channel weights), calibrated on ``calibration_logmel``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_LogmelReader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="sonolake-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(calibration_logmel),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return int8_path


def convert_fp16(fp32_path: Path, fp16_path: Path) -> Path:
    """FP16 weights and compute, float32 inputs/outputs (for the CUDA provider)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(fp16_path))
    return fp16_path
