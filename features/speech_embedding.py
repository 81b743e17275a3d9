"""Speech embeddings: Google's speech-embedding model (openWakeWord's front end) as one ONNX graph.

Why: a keyword network trained from scratch on the ~2,500 clips this product has reaches 0.87
on speakers it never heard (docs/models.md). The same clips as embeddings of a network trained
on far more speech, pooled and fed to a linear classifier fitted in seconds, reach 0.93 on the
same held-out speakers. The embeddings carry what the small corpus cannot teach: what speech
sounds like across voices.

The model ships in the ``pyopen-wakeword`` wheel (Apache-2.0) as two TFLite files:

- ``melspectrogram.tflite``: a 512-sample STFT as two convolutions (real and imaginary kernels,
  hop 160 samples = 10 ms), power, 32 mel bands, ``10·log10`` with a floor 80 dB below the
  peak. openWakeWord then maps ``x → x / 10 + 2`` before the embedding network.
- ``embedding_model.tflite``: 20 convolutions (3×3 stem, then alternating 1×3 and 3×1),
  LeakyReLU(0.2) clipped at -0.4 and max-pools, mapping 76 frames (775 ms) × 32 bands to 96
  values.

Serving runs ONNX Runtime only, so both are rebuilt here as one graph, with every weight read
from the TFLite flatbuffers (``tflite`` package) and each operator translated (NHWC → NCHW):
``audio [B, n]`` float in [-1, 1) → ``embeddings [B, T, 96]``, one embedding every
:data:`FRAMES_PER_STEP` frames. The graph pads each window with :data:`PAD_SAMPLES` of zeros on
both sides, so that a word at either edge of a 1-s window still has embeddings centred on it
(1-s windows give 5).
Two deliberate differences from the TFLite files: the input is scaled by 32768 inside the
graph (the files take PCM16-scale floats), and the 80-dB floor is taken per window, not over
the whole batch, so a window's embedding never depends on the others in its batch (a batch of
one is exactly the TFLite result).
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

from features.window import CLASSIFIER_WINDOW_SAMPLES

EMBEDDING_DIM = 96
MEL_BANDS = 32
HOP_SAMPLES = 160
"""STFT hop: one log-mel frame every 10 ms at 16 kHz."""
FFT_SAMPLES = 512
FRAMES_PER_EMBEDDING = 76
"""Log-mel frames one embedding sees (775 ms)."""
FRAMES_PER_STEP = 16
"""Frames between consecutive embeddings (160 ms): a 1-s window gets 5.

openWakeWord steps by 8 frames (80 ms). Every other embedding halves the cost of a
classification, and on the held-out speakers the linear classifier scored 0.929–0.931 with 5
embeddings against 0.932–0.937 with 9 (two seeds each)."""
PAD_SAMPLES = 4000
"""Zeros added before and after each window (250 ms at 16 kHz).

Measured on the held-out speakers (pooled embeddings every 80 ms, logistic regression): no
padding 0.81 (three embeddings per 1-s window, none centred near its edges), 250 ms 0.93,
500 ms 0.91.
"""
PCM16_SCALE = 32768.0
OPSET = 18
EMBEDDING_INPUT = "embedding_input"
"""The node that hands the log-mel windows to the embedding network."""
IR_VERSION = 9
"""The ONNX IR version onnxruntime 1.2x reads (newer ``onnx`` writes 10+ by default)."""


def model_files() -> tuple[Path, Path]:
    """The two TFLite files inside the installed ``pyopen-wakeword`` wheel."""
    models = Path(str(importlib.resources.files("pyopen_wakeword") / "models"))
    files = (models / "melspectrogram.tflite", models / "embedding_model.tflite")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; install the pyopen-wakeword 1.1 package")
    return files


def embeddings_per_window(n_samples: int = CLASSIFIER_WINDOW_SAMPLES) -> int:
    """Embeddings the graph gives for a window of ``n_samples`` (5 for 1 s at 16 kHz)."""
    frames = (n_samples + 2 * PAD_SAMPLES - FFT_SAMPLES) // HOP_SAMPLES + 1
    if frames < FRAMES_PER_EMBEDDING:
        raise ValueError(f"a window of {n_samples} samples is too short for one embedding")
    return (frames - FRAMES_PER_EMBEDDING) // FRAMES_PER_STEP + 1


_OPERATOR_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_DTYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.INT32: np.int32}


class _Tflite:
    """One TFLite file: its operators, with constant tensors as numpy arrays."""

    def __init__(self, path: Path) -> None:
        self.model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
        self.graph = self.model.Subgraphs(0)

    def operators(self) -> list[tuple[str, Any]]:
        out = []
        for i in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(i)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            out.append((_OPERATOR_NAMES[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())], op))
        return out

    def constant(self, tensor: int) -> np.ndarray:
        t = self.graph.Tensors(tensor)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        shape = t.ShapeAsNumpy().tolist() if t.ShapeLength() else []
        return np.frombuffer(data.tobytes(), _DTYPES[t.Type()]).reshape(shape)

    def options(self, op: Any, kind: type) -> Any:
        table = op.BuiltinOptions()
        opts = kind()
        opts.Init(table.Bytes, table.Pos)
        return opts


class _Graph:
    """Nodes and initializers of the ONNX graph being built."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _log_mel(g: _Graph, mel: _Tflite, n_samples: int) -> str:
    """audio [B, n] → openWakeWord's frames [B, F, 32] (x / 10 + 2 of the log-mel, dB)."""
    by_code: dict[str, list[Any]] = {}
    for code, op in mel.operators():
        by_code.setdefault(code, []).append(op)
    real, imag = by_code["CONV_2D"]
    expected = {"CONV_2D", "BATCH_MATMUL", "MUL", "ADD", "LOG", "REDUCE_MAX", "SUB", "MINIMUM"}
    if not expected <= by_code.keys():
        raise ValueError(f"unexpected melspectrogram graph: {sorted(by_code)}")
    kernel = [mel.constant(op.Inputs(1))[:, 0, :, 0][:, None, :] for op in (real, imag)]
    bias = mel.constant(real.Inputs(2))
    filterbank = mel.constant(by_code["BATCH_MATMUL"][0].Inputs(1))  # [257, 32]
    pads = g.const("audio_pads", [0, PAD_SAMPLES, 0, PAD_SAMPLES], np.int64)
    x = g.node("Mul", ["audio", g.const("pcm16", PCM16_SCALE)], "audio_pcm16")
    x = g.node("Pad", [x, pads], "padded")
    x = g.node("Unsqueeze", [x, g.const("axis1", [1], np.int64)], "padded_c")
    stft_bias = g.const("stft_bias", bias)
    re = g.node("Conv", [x, g.const("stft_re", kernel[0]), stft_bias], "re", strides=[HOP_SAMPLES])
    im = g.node("Conv", [x, g.const("stft_im", kernel[1]), stft_bias], "im", strides=[HOP_SAMPLES])
    power = g.node("Add", [g.node("Mul", [re, re], "re2"), g.node("Mul", [im, im], "im2")], "power")
    power = g.node("Transpose", [power], "power_t", perm=[0, 2, 1])  # [B, F, 257]
    bands = g.node("MatMul", [power, g.const("mel_filterbank", filterbank)], "mel_power")
    bands = g.node("Max", [bands, g.const("power_floor", 1e-10)], "mel_floored")
    db = g.node("Mul", [g.node("Log", [bands], "ln"), g.const("db_per_ln", 10 / np.log(10))], "db")
    peak = g.node("ReduceMax", [db, g.const("axes12", [1, 2], np.int64)], "peak", keepdims=1)
    floor = g.node("Sub", [peak, g.const("top_db", 80.0)], "db_floor")
    db = g.node("Max", [db, floor], "db_clipped")
    frames = g.node("Div", [db, g.const("ten", 10.0)], "db10")
    frames = g.node("Add", [frames, g.const("two", 2.0)], "frames")
    # Every embedding's 76 frames at once: [B, T, 76, 32] → [B·T, 1, 76, 32].
    t = embeddings_per_window(n_samples)
    index = np.arange(t)[:, None] * FRAMES_PER_STEP + np.arange(FRAMES_PER_EMBEDDING)[None, :]
    windows = g.node("Gather", [frames, g.const("frame_index", index, np.int64)], "wins", axis=1)
    shape = g.const("window_shape", [-1, 1, FRAMES_PER_EMBEDDING, MEL_BANDS], np.int64)
    return g.node("Reshape", [windows, shape], EMBEDDING_INPUT)


def _embedding(g: _Graph, net: _Tflite, x: str) -> str:
    """The embedding CNN, operator by operator (NHWC weights → ONNX's NCHW)."""
    names = {net.graph.Inputs(0): x}
    for i, (code, op) in enumerate(net.operators()):
        src, out = names[op.Inputs(0)], f"emb{i}"
        if code == "PAD":
            before_after = net.constant(op.Inputs(1))[[0, 3, 1, 2]]  # N, H, W, C → N, C, H, W
            pads = np.concatenate([before_after[:, 0], before_after[:, 1]])
            g.node("Pad", [src, g.const(f"pads{i}", pads, np.int64)], out)
        elif code == "CONV_2D":
            o = net.options(op, tflite.Conv2DOptions)
            if o.FusedActivationFunction() or o.DilationHFactor() != 1 or o.DilationWFactor() != 1:
                raise ValueError(f"operator {i}: fused activations and dilation are not translated")
            weight = net.constant(op.Inputs(1)).transpose(0, 3, 1, 2)  # OHWI → OIHW
            bias = net.constant(op.Inputs(2))
            g.node(
                "Conv",
                [src, g.const(f"w{i}", weight), g.const(f"b{i}", bias)],
                out,
                strides=[o.StrideH(), o.StrideW()],
                auto_pad=_auto_pad(o.Padding()),
            )
        elif code == "LEAKY_RELU":
            g.node("LeakyRelu", [src], out, alpha=net.options(op, tflite.LeakyReluOptions).Alpha())
        elif code == "MAXIMUM":
            g.node("Max", [src, g.const(f"max{i}", net.constant(op.Inputs(1)))], out)
        elif code == "MAX_POOL_2D":
            o = net.options(op, tflite.Pool2DOptions)
            g.node(
                "MaxPool",
                [src],
                out,
                kernel_shape=[o.FilterHeight(), o.FilterWidth()],
                strides=[o.StrideH(), o.StrideW()],
                auto_pad=_auto_pad(o.Padding()),
            )
        else:
            raise ValueError(f"operator {i}: {code} is not translated")
        names[op.Outputs(0)] = out
    return names[net.graph.Outputs(0)]


def _auto_pad(padding: int) -> str:
    return "SAME_UPPER" if padding == tflite.Padding.SAME else "VALID"


@lru_cache(maxsize=4)
def embedding_graph(n_samples: int = CLASSIFIER_WINDOW_SAMPLES) -> bytes:
    """The serialized ONNX graph ``audio [B, n_samples] → embeddings [B, T, 96]``."""
    mel_file, embedding_file = model_files()
    g = _Graph()
    x = _embedding(g, _Tflite(embedding_file), _log_mel(g, _Tflite(mel_file), n_samples))
    t = embeddings_per_window(n_samples)
    batch = g.node(
        "Slice",
        [
            g.node("Shape", ["audio"], "audio_shape"),
            g.const("zero", [0], np.int64),
            g.const("one", [1], np.int64),
        ],
        "batch",
    )
    shape = g.node(
        "Concat", [batch, g.const("tail", [t, EMBEDDING_DIM], np.int64)], "out_shape", axis=0
    )
    g.node("Reshape", [x, shape], "embeddings")
    graph = helper.make_graph(
        g.nodes,
        "speech_embedding",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", n_samples])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", t, 96])],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def log_mel_nodes(model: onnx.ModelProto) -> list[str]:
    """The names of the graph's log-mel nodes, the audio up to the embedding network's input.

    Their values exceed float16's range (the STFT power of PCM16-scale audio reaches ~1e14), so
    an FP16 artifact keeps them in float32.
    """
    names = []
    for node in model.graph.node:
        names.append(node.name)
        if node.name == EMBEDDING_INPUT:
            return names
    raise ValueError(f"the graph has no {EMBEDDING_INPUT} node: not a speech-embedding graph")


EMBED_BATCH = 64
"""Windows per ONNX Runtime call when embedding a corpus (keeps temporaries to ~100 MB)."""


class SpeechEmbedder:
    """The embedding graph in an ONNX Runtime session, for training and offline scoring."""

    def __init__(self, *, intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            embedding_graph(CLASSIFIER_WINDOW_SAMPLES), options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    @lru_cache(maxsize=1)
    def shared(cls) -> SpeechEmbedder:
        """One session per process (ONNX Runtime sessions are thread-safe)."""
        return cls()

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``[N, 16000]`` float windows (±1) → ``[N, T, 96]`` embeddings."""
        windows = np.asarray(windows, dtype=np.float32)
        out = np.empty((len(windows), embeddings_per_window(), EMBEDDING_DIM), np.float32)
        for start in range(0, len(windows), EMBED_BATCH):
            batch = np.ascontiguousarray(windows[start : start + EMBED_BATCH])
            out[start : start + len(batch)] = self.session.run(None, {"audio": batch})[0]
        return out
