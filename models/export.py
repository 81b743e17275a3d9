"""Export a trained keyword-spotting CNN to ONNX: FP32, INT8 (CPU/edge) and FP16 (GPU).

The FP32 graph is built with ``onnx.helper`` straight from the parameter pytree rather than by
tracing JAX (jax2onnx would add a dependency tree for a graph of a few op types). Each batch
norm is folded into the convolution before it (``w' = w·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)``),
so the graph is just Sub/Mul (input normalisation), Transpose, Conv, Relu, Add,
GlobalAveragePool, Gemm and Softmax; an ensemble averages its members' softmax outputs with
one ``Mean`` node. ONNX Runtime's output equals the JAX forward pass to float32 rounding
(tested).

INT8 is static QDQ quantization (:func:`quantize_int8`): activations uint8 / weights int8
per output channel, ranges calibrated on clean training windows. Static beats dynamic here: a
CNN's cost is its convolutions, and dynamic quantization only covers MatMul/Gemm-like ops well;
static QDQ lets ONNX Runtime fuse each DQ→Conv→Q into one QLinearConv on u8s8 kernels.
Measured on the full model: static 3.6× faster than FP32 at batch 1 with no accuracy lost,
dynamic no faster than FP32 (docs/models.md).

FP16 keeps float32 inputs and outputs (``keep_io_types``) so callers feed the same arrays to
every artifact; it is meant for the CUDA provider (on the CPU provider it runs, at FP32 speed).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from features.spectral import WINDOW_FRAMES
from models.architecture import (
    BN_EPSILON,
    FREQ_STRIDE,
    ArchitectureConfig,
    Params,
    State,
    same_padding,
)

INPUT_NAME = "logmel"
OUTPUT_NAME = "probs"
OPSET = 17
IR_VERSION = 9
"""Opset 17 / IR 9: read by every ONNX Runtime from 1.15 on, and by the quantization tools."""
CALIBRATION_BATCH = 32


def _fold(w_wio: np.ndarray, bn: dict, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference-mode batch norm into a bias-free 1-D convolution → (OIW weights, bias)."""
    scale = np.asarray(bn["gamma"]) / np.sqrt(np.asarray(stats["var"]) + BN_EPSILON)
    folded_w = np.transpose(np.asarray(w_wio), (2, 1, 0)) * scale[:, None, None]
    folded_b = np.asarray(bn["beta"]) - np.asarray(stats["mean"]) * scale
    return folded_w.astype(np.float32), folded_b.astype(np.float32)


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def conv(
        self, x: str, name: str, w_wio: np.ndarray, bn: dict, stats: dict, stride: int, length: int
    ) -> tuple[str, int]:
        """Conv (BN folded) over ``length`` frames → (output name, output length)."""
        weight, bias = _fold(w_wio, bn, stats)
        before, after = same_padding(length, weight.shape[2], stride)
        out = self.node(
            "Conv",
            [x, self.const(f"{name}.w", weight), self.const(f"{name}.b", bias)],
            name,
            kernel_shape=[weight.shape[2]],
            strides=[stride],
            pads=[before, after],
        )
        return out, -(-length // stride)


def _freq_conv(
    g: _GraphBuilder, prefix: str, x: str, params: Params, state: State, arch: ArchitectureConfig
) -> str:
    """The optional 3×3 time-frequency conv; returns ``[N, (mels/2)·C, frames]`` channels-first."""
    channels = arch.freq_channels
    scale = np.asarray(params["bn_freq"]["gamma"]) / np.sqrt(
        np.asarray(state["bn_freq"]["var"]) + BN_EPSILON
    )
    weight = np.transpose(np.asarray(params["freq"]), (3, 2, 0, 1)) * scale[:, None, None, None]
    bias = np.asarray(params["bn_freq"]["beta"]) - np.asarray(state["bn_freq"]["mean"]) * scale
    pad_t = same_padding(WINDOW_FRAMES, 3, 1)
    pad_f = same_padding(arch.n_mels, 3, FREQ_STRIDE)
    image = g.node(
        "Unsqueeze", [x, g.const(f"{prefix}axis1", np.array([1], np.int64))], f"{prefix}image"
    )
    image = g.node(
        "Conv",
        [
            image,
            g.const(f"{prefix}freq.w", weight.astype(np.float32)),
            g.const(f"{prefix}freq.b", bias.astype(np.float32)),
        ],
        f"{prefix}freq",
        kernel_shape=[3, 3],
        strides=[1, FREQ_STRIDE],
        pads=[pad_t[0], pad_f[0], pad_t[1], pad_f[1]],
    )
    image = g.node("Relu", [image], f"{prefix}freq.relu")
    # [N, C, T, F] → [N, F, C, T] → [N, F·C, T]: channel index f·C + c, as in the JAX reshape.
    image = g.node("Transpose", [image], f"{prefix}freq.major", perm=[0, 3, 1, 2])
    shape = np.array([0, -(-arch.n_mels // FREQ_STRIDE) * channels, WINDOW_FRAMES], np.int64)
    return g.node(
        "Reshape", [image, g.const(f"{prefix}freq.shape", shape)], f"{prefix}channels_first"
    )


def _member_graph(
    g: _GraphBuilder, prefix: str, params: Params, state: State, arch: ArchitectureConfig
) -> str:
    """Nodes of one member; returns the name of its softmax output."""
    x = g.node(
        "Sub",
        [INPUT_NAME, g.const(f"{prefix}band_mean", np.asarray(state["band_mean"]))],
        f"{prefix}centred",
    )
    x = g.node(
        "Mul",
        [x, g.const(f"{prefix}band_scale", np.asarray(state["band_scale"]))],
        f"{prefix}normalised",
    )
    if arch.window_mean_norm:
        mean = g.node("ReduceMean", [x], f"{prefix}window_mean", axes=[1], keepdims=1)
        x = g.node("Sub", [x, mean], f"{prefix}mean_normalised")
    if arch.freq_channels:
        x = _freq_conv(g, prefix, x, params, state, arch)
    else:
        x = g.node("Transpose", [x], f"{prefix}channels_first", perm=[0, 2, 1])
    x, length = g.conv(
        x, f"{prefix}stem", params["stem"], params["bn0"], state["bn0"], 1, WINDOW_FRAMES
    )
    x = g.node("Relu", [x], f"{prefix}stem.relu")
    for index, (block, stats, (_, stride)) in enumerate(
        zip(params["blocks"], state["blocks"], arch.stages, strict=True)
    ):
        name = f"{prefix}block{index}"
        h, out_length = g.conv(
            x, f"{name}.conv1", block["w1"], block["bn1"], stats["bn1"], stride, length
        )
        h = g.node("Relu", [h], f"{name}.conv1.relu")
        h, _ = g.conv(h, f"{name}.conv2", block["w2"], block["bn2"], stats["bn2"], 1, out_length)
        if "ws" in block:
            x, _ = g.conv(
                x, f"{name}.shortcut", block["ws"], block["bns"], stats["bns"], stride, length
            )
        x = g.node("Relu", [g.node("Add", [h, x], f"{name}.sum")], f"{name}.relu")
        length = out_length
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


def build_onnx(
    members: Sequence[tuple[Params, State]], arch: ArchitectureConfig
) -> onnx.ModelProto:
    """The FP32 ONNX model of one network or an ensemble (mean of member probabilities)."""
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
        "keyword_spotting_tcresnet",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", WINDOW_FRAMES, arch.n_mels]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", arch.n_classes])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sonolake"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save_fp32(
    members: Sequence[tuple[Params, State]], arch: ArchitectureConfig, path: Path
) -> Path:
    onnx.save(build_onnx(members, arch), str(path))
    return path


class _CalibrationReader:
    """Calibration feed for ``quantize_static``: batches of 32 model inputs (either kind)."""

    def __init__(self, inputs: np.ndarray, input_name: str) -> None:
        self._input_name = input_name
        self._batches = [
            inputs[s : s + CALIBRATION_BATCH].astype(np.float32)
            for s in range(0, len(inputs), CALIBRATION_BATCH)
        ]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {self._input_name: self._batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


HEAD_NODES = ("head_logits",)
"""What INT8 quantizes in an ``audio`` bundle: its linear head. Quantizing the embedding
network too moved its embeddings by ~33 % on average (MinMax calibration, measured) for a
1.75× speed-up, so it stays FP32."""


def quantize_int8(
    fp32_path: Path, int8_path: Path, calibration: np.ndarray, *, input_kind: str = "logmel"
) -> Path:
    """Static QDQ INT8: u8 activations, s8 per-channel weights, ranges from the calibration set
    (``calibration``: model inputs of the bundle's ``input_kind``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="sonolake-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(calibration, onnx.load(str(fp32_path)).graph.input[0].name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            nodes_to_quantize=list(HEAD_NODES) if input_kind == "audio" else None,
        )
    return int8_path


def convert_fp16(fp32_path: Path, fp16_path: Path, *, input_kind: str = "logmel") -> Path:
    """FP16 weights and compute, float32 inputs/outputs (for the CUDA provider).

    An ``audio`` graph computes its log-mel in float32 (the STFT power reaches ~1e14, past
    float16's 65504) and everything after it in float16 (:func:`_fp16_after_log_mel`).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32 = onnx.load(str(fp32_path))
    if input_kind == "audio":
        model = _fp16_after_log_mel(fp32)
    else:
        model = convert_float_to_float16(fp32, keep_io_types=True)
    onnx.save(model, str(fp16_path))
    return fp16_path


def _fp16_after_log_mel(model: onnx.ModelProto) -> onnx.ModelProto:
    """Cast to float16 where the embedding network starts and back at the output.

    ONNX Runtime's converter, told to keep the log-mel nodes in float32, still rounds every
    value between two of them through float16 (and names the casts it adds twice), so the cut
    is made here: float initializers read only after the cut become float16.
    """
    from features.speech_embedding import log_mel_nodes

    names = log_mel_nodes(model)  # in graph order, ending where the embedding network starts
    before = set(names)
    cut = next(node for node in model.graph.node if node.name == names[-1])
    cut_value, half, output = cut.output[0], f"{cut.output[0]}_fp16", model.graph.output[0].name
    read_before = {name for node in model.graph.node if node.name in before for name in node.input}
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in read_before:
            half_init = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(half_init, init.name))
    for node in model.graph.node:
        if node.name not in before:
            node.input[:] = [half if name == cut_value else name for name in node.input]
            node.output[:] = [f"{output}_fp16" if name == output else name for name in node.output]
    nodes = list(model.graph.node)
    at = nodes.index(cut) + 1
    nodes[at:at] = [
        helper.make_node("Cast", [cut_value], [half], name=half, to=TensorProto.FLOAT16)
    ]
    to_float = helper.make_node("Cast", [f"{output}_fp16"], [output], to=TensorProto.FLOAT)
    nodes.append(to_float)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model
