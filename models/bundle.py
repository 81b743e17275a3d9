"""The MODEL BUNDLE: one folder, one format, written by training and read by everyone else.

A bundle holds ``model.onnx`` (FP32), ``model.int8.onnx`` (CPU and edge), ``model.fp16.onnx``
(FP16 weights, float32 inputs/outputs, for the CUDA provider) and ``model.json``, the bundle
manifest: labels in output order, feature version, tensor names, sample rate and window length,
quantization notes and the evaluation metrics. The registry logs and restores exactly these
files; the serving engine and the evaluator read them.

Reading is cheap (json only). Writing exports ONNX, so the exporter (and with it JAX's
parameter types) is imported only by :func:`write_bundle`: a serving process never pays for it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features import CLASSIFIER_WINDOW_SAMPLES, FEATURE_VERSION, N_MELS, WINDOW_FRAMES
from features.pcm import SAMPLE_RATE_HZ

if TYPE_CHECKING:
    from models.embedding_head import TrainedHead
    from models.training import TrainedModel

ARTIFACT_FILES: dict[str, str] = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
}
"""Artifact kind → file name inside a bundle folder."""
MANIFEST_FILE = "model.json"
REQUIRED_KEYS = ("labels", "feature_version")
INPUT_KINDS = ("logmel", "audio")
"""What a bundle's graphs take: log-mel ``[B, frames, mels]`` (the CNN) or the 16-kHz windows
``[B, samples]`` themselves (the embedding classifier computes its own features)."""
CALIBRATION_WINDOWS = 256
"""Training windows used to calibrate INT8 activation ranges (a stratified sample)."""


class BundleInvalid(ValueError):
    """A folder is not a usable model bundle (missing file or key)."""


def read_bundle_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    """``model.json`` of a bundle, with a clear error when it is missing or incomplete."""
    path = Path(bundle_dir) / MANIFEST_FILE
    if not path.exists():
        raise BundleInvalid(f"{path} not found: {Path(bundle_dir)} is not a model bundle")
    manifest = json.loads(path.read_text())
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleInvalid(f"{path} lacks {', '.join(missing)}")
    return manifest


def write_bundle_manifest(bundle_dir: Path | str, manifest: dict[str, Any]) -> None:
    """(Re)write ``model.json`` (e.g. to add metrics after evaluation)."""
    path = Path(bundle_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")


def input_kind(manifest: dict[str, Any]) -> str:
    """A manifest's ``input_kind`` (bundles written before it existed take log-mel)."""
    kind = str(manifest.get("input_kind", "logmel"))
    if kind not in INPUT_KINDS:
        raise BundleInvalid(
            f"unknown input_kind {kind!r}; this code reads {', '.join(INPUT_KINDS)}"
        )
    return kind


def model_inputs(kind: str, windows: np.ndarray) -> np.ndarray:
    """What a graph of input kind ``kind`` takes for 16-kHz windows ``[B, samples]``.

    The one place that turns windows into model input: serving, evaluation, calibration,
    warm-up and the remote endpoint all call it with the bundle's kind.
    """
    if kind == "audio":
        return np.ascontiguousarray(windows, dtype=np.float32)
    from features import logmel_batch

    return logmel_batch(windows)


def artifact_path(bundle_dir: Path | str, artifact: str) -> Path:
    """Path of one artifact (``fp32``, ``int8``, ``fp16``) inside a bundle."""
    if artifact not in ARTIFACT_FILES:
        raise BundleInvalid(
            f"unknown artifact {artifact!r}; use one of {', '.join(ARTIFACT_FILES)}"
        )
    return Path(bundle_dir) / ARTIFACT_FILES[artifact]


def calibration_rows(
    labels: np.ndarray, count: int = CALIBRATION_WINDOWS, seed: int = 0
) -> np.ndarray:
    """Rows spread evenly over the classes, so rare classes set INT8 ranges too."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, count // max(len(classes), 1))
    rows = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


def write_bundle(
    out_dir: Path | str,
    model: TrainedModel | TrainedHead,
    calibration_windows: np.ndarray,
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` into ``out_dir`` (replaced if present) and return the folder.

    Files are written to a sibling temporary folder and moved into place at the end, so a
    reader never sees a half-written bundle.
    """
    from models.export import OUTPUT_NAME, convert_fp16, quantize_int8

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    kind = model.input_kind
    fp32 = model.save_onnx(staging / ARTIFACT_FILES["fp32"])
    calibration = model_inputs(kind, calibration_windows)
    quantize_int8(fp32, staging / ARTIFACT_FILES["int8"], calibration, input_kind=kind)
    convert_fp16(fp32, staging / ARTIFACT_FILES["fp16"], input_kind=kind)
    shapes = {"frames": WINDOW_FRAMES, "n_mels": N_MELS} if kind == "logmel" else {}
    manifest = {
        "labels": list(model.labels),
        "feature_version": FEATURE_VERSION,
        "input_kind": kind,
        "input_name": model.input_name,
        "output_name": OUTPUT_NAME,
        "sample_rate": SAMPLE_RATE_HZ,
        "window_samples": CLASSIFIER_WINDOW_SAMPLES,
        **shapes,
        "metrics": metrics or {},
        "architecture": model.describe(),
        "training": {
            **model.config.to_dict(),
            "train_windows": model.n_train_windows,
            "train_seconds": round(model.train_seconds, 1),
        },
        "quantization": _quantization_notes(kind, len(calibration_windows)),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_bundle_manifest(staging, manifest)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def _quantization_notes(kind: str, calibration_windows: int) -> dict[str, str]:
    scope = "" if kind == "logmel" else " (the linear head; the embedding network stays FP32)"
    fp16 = "" if kind == "logmel" else " (the STFT power stays FP32: it exceeds float16's range)"
    return {
        "int8": "static QDQ, uint8 activations, int8 per-channel weights, MinMax "
        f"calibration on {calibration_windows} training windows{scope}",
        "fp16": f"float16 weights and compute, float32 inputs/outputs{fp16}",
    }


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
