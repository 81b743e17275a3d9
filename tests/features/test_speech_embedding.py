"""The speech-embedding graph against the TFLite runtime that ships with the same model files."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest

from features.corpus import SPEECH_COMMANDS, corpus_manifest
from features.speech_embedding import (
    EMBEDDING_DIM,
    FRAMES_PER_EMBEDDING,
    FRAMES_PER_STEP,
    MEL_BANDS,
    PAD_SAMPLES,
    SpeechEmbedder,
    embeddings_per_window,
    model_files,
)
from models.dataset import LabelledWindows


class TfliteModel:
    """One TFLite file run by ``libtensorflowlite_c`` from the ``pyopen-wakeword`` wheel."""

    def __init__(self, path: Path) -> None:
        lib_path = next((path.parent.parent / "lib").glob("*tensorflowlite_c*"))
        lib = ctypes.CDLL(str(lib_path), mode=os.RTLD_GLOBAL)
        vp, i32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
        for name, args, res in [
            ("TfLiteModelCreateFromFile", [ctypes.c_char_p], vp),
            ("TfLiteInterpreterCreate", [vp, vp], vp),
            ("TfLiteInterpreterResizeInputTensor", [vp, i32, ctypes.POINTER(i32), i32], i32),
            ("TfLiteInterpreterAllocateTensors", [vp], i32),
            ("TfLiteInterpreterGetInputTensor", [vp, i32], vp),
            ("TfLiteInterpreterGetOutputTensor", [vp, i32], vp),
            ("TfLiteTensorCopyFromBuffer", [vp, vp, size], i32),
            ("TfLiteInterpreterInvoke", [vp], i32),
            ("TfLiteTensorByteSize", [vp], size),
            ("TfLiteTensorCopyToBuffer", [vp, vp, size], i32),
        ]:
            getattr(lib, name).argtypes, getattr(lib, name).restype = args, res
        self.lib = lib
        self.interpreter = lib.TfLiteInterpreterCreate(
            lib.TfLiteModelCreateFromFile(str(path).encode()), None
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lib, it = self.lib, self.interpreter
        x = np.ascontiguousarray(x, dtype=np.float32)
        dims = (ctypes.c_int32 * x.ndim)(*x.shape)
        assert lib.TfLiteInterpreterResizeInputTensor(it, 0, dims, x.ndim) == 0
        assert lib.TfLiteInterpreterAllocateTensors(it) == 0
        source = lib.TfLiteInterpreterGetInputTensor(it, 0)
        lib.TfLiteTensorCopyFromBuffer(source, x.ctypes.data_as(ctypes.c_void_p), x.nbytes)
        assert lib.TfLiteInterpreterInvoke(it) == 0
        result = lib.TfLiteInterpreterGetOutputTensor(it, 0)
        out = np.empty(lib.TfLiteTensorByteSize(result) // 4, np.float32)
        lib.TfLiteTensorCopyToBuffer(result, out.ctypes.data_as(ctypes.c_void_p), out.nbytes)
        return out


def tflite_embeddings(window: np.ndarray) -> np.ndarray:
    """openWakeWord's recipe on one window: log-mel, ``x / 10 + 2``, 76-frame windows every 8."""
    mel_file, embedding_file = model_files()
    padded = np.pad(window * 32768.0, PAD_SAMPLES)[None]
    frames = TfliteModel(mel_file)(padded).reshape(-1, MEL_BANDS) / 10 + 2
    starts = range(0, len(frames) - FRAMES_PER_EMBEDDING + 1, FRAMES_PER_STEP)
    batch = np.stack([frames[s : s + FRAMES_PER_EMBEDDING] for s in starts])[..., None]
    return TfliteModel(embedding_file)(batch).reshape(len(batch), EMBEDDING_DIM)


@pytest.fixture(scope="module")
def clips(shared_data: Path) -> np.ndarray:
    data = LabelledWindows.from_manifest(corpus_manifest(shared_data, SPEECH_COMMANDS))
    rows = np.random.default_rng(0).choice(len(data), 6, replace=False)
    return data.windows[rows]


def test_the_onnx_graph_gives_the_tflite_models_embeddings_on_real_speech(
    clips: np.ndarray,
) -> None:
    ours = SpeechEmbedder.shared().embed(clips)
    assert ours.shape == (len(clips), embeddings_per_window(), EMBEDDING_DIM)
    for window, embedding in zip(clips, ours, strict=True):
        reference = tflite_embeddings(window)
        assert reference.shape == embedding.shape
        scale = float(np.abs(reference).max())
        assert scale > 1.0  # real activations, not zeros
        np.testing.assert_allclose(embedding, reference, atol=1e-4 * scale)


def test_a_windows_embedding_does_not_depend_on_its_batch(clips: np.ndarray) -> None:
    quiet = clips[:1] * 1e-3
    alone = SpeechEmbedder.shared().embed(quiet)
    beside_loud = SpeechEmbedder.shared().embed(np.concatenate([quiet, clips[1:] * 30.0]))
    np.testing.assert_allclose(beside_loud[:1], alone, rtol=1e-5, atol=1e-5)


def test_window_lengths() -> None:
    assert embeddings_per_window(16_000) == 5
    with pytest.raises(ValueError, match="too short"):
        embeddings_per_window(1)
