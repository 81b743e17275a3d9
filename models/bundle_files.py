"""The MODEL BUNDLE layout as the registry and the serving engine read it.

A bundle is a folder: ``model.onnx`` (FP32), ``model.int8.onnx`` (for CPU and edge),
``model.fp16.onnx`` (FP16 weights, float32 inputs/outputs, for the CUDA provider) and
``model.json`` (labels in output order, feature_version, input/output tensor names, sample rate
and window length, metrics). Training writes it; this module only reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARTIFACT_FILES: dict[str, str] = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
}
"""Artifact kind → file name inside a bundle folder."""
MANIFEST_FILE = "model.json"
REQUIRED_KEYS = ("labels", "feature_version")


class BundleInvalid(ValueError):
    """A folder is not a usable model bundle (missing file or key)."""


def read_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    """``model.json`` of a bundle, with a clear error when it is missing or incomplete."""
    path = Path(bundle_dir) / MANIFEST_FILE
    if not path.exists():
        raise BundleInvalid(f"{path} not found: {Path(bundle_dir)} is not a model bundle")
    manifest = json.loads(path.read_text())
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleInvalid(f"{path} lacks {', '.join(missing)}")
    return manifest


def artifact_path(bundle_dir: Path | str, artifact: str) -> Path:
    """Path of one artifact (``fp32``, ``int8``, ``fp16``) inside a bundle."""
    if artifact not in ARTIFACT_FILES:
        raise BundleInvalid(
            f"unknown artifact {artifact!r}; use one of {', '.join(ARTIFACT_FILES)}"
        )
    return Path(bundle_dir) / ARTIFACT_FILES[artifact]
