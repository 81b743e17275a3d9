"""ONNX Runtime sessions: a bundle loaded on the best provider that really works.

Every ONNX Runtime session of a model is opened here (serving, evaluation, benchmarks), with the
same options: one inter-op thread, ``intra_op_threads`` intra-op threads, no spinning.

``onnxruntime-gpu`` reports ``CUDAExecutionProvider`` in ``get_available_providers()`` whenever
the wheel was built with it, even with no GPU or no CUDA libraries; creating a session then logs
an error and quietly runs on the CPU. So the provider is read back from the session
(``session.get_providers()[0]``), and the artifact follows it: FP16 on CUDA, INT8 on CPU
(ONNX Runtime's CUDA provider has no fast kernels for dynamically quantized INT8). Whether CUDA
works is remembered per process, so a hot swap does not retry (and re-log) a failing CUDA load.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from features import FEATURE_VERSION
from models.bundle import (
    ARTIFACT_FILES,
    artifact_path,
    input_kind,
    model_inputs,
    read_bundle_manifest,
)

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
DEFAULT_PROVIDERS = (CUDA_PROVIDER, CPU_PROVIDER)
ARTIFACT_FOR_PROVIDER = {CUDA_PROVIDER: "fp16", CPU_PROVIDER: "int8"}
_cuda_works: bool | None = None
"""Per-process memo: None = not tried yet, then whether a CUDA session really ran on CUDA."""


class IncompatibleModel(ValueError):
    """The bundle cannot be served by this code (feature version, window or output mismatch)."""


@dataclass(frozen=True)
class LoadedModel:
    """An immutable, warmed-up model: swapping models means swapping one of these."""

    session: Any
    """onnxruntime.InferenceSession"""
    version: str
    provider: str
    artifact: str
    labels: tuple[str, ...]
    input_name: str
    output_name: str
    feature_version: str
    window_samples: int
    bundle_dir: Path
    input_kind: str = "logmel"
    """``logmel`` or ``audio`` (:data:`models.bundle.INPUT_KINDS`)."""

    def inputs(self, windows: np.ndarray) -> np.ndarray:
        """This model's input for 16-kHz windows ``[B, samples]`` (log-mel or the audio)."""
        return model_inputs(self.input_kind, windows)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Model input (see :meth:`inputs`) → ``[B, n_labels]`` probabilities."""
        (probs,) = self.session.run([self.output_name], {self.input_name: inputs})
        return np.asarray(probs, dtype=np.float32)

    def classify(self, windows: np.ndarray) -> np.ndarray:
        """``[B, samples]`` windows → ``[B, n_labels]`` probabilities."""
        return self.run(self.inputs(windows))


def choose_artifact(provider: str, present: Sequence[str], forced: str | None = None) -> str:
    """The artifact to run on ``provider``, given the artifacts a bundle has.

    FP16 on CUDA, INT8 on CPU, FP32 when the preferred one is missing; ``forced`` wins.
    """
    if forced is not None:
        if forced not in present:
            raise IncompatibleModel(f"the bundle has no {forced} artifact (it has {list(present)})")
        return forced
    preferred = ARTIFACT_FOR_PROVIDER.get(provider, "fp32")
    if preferred in present:
        return preferred
    if "fp32" in present:
        return "fp32"
    raise IncompatibleModel(f"the bundle has no usable artifact (it has {list(present)})")


def provider_plan(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Providers to try, in order: the requested ones that this runtime has, CPU last."""
    plan = [p for p in (requested or DEFAULT_PROVIDERS) if p in available]
    if CPU_PROVIDER not in plan:
        plan.append(CPU_PROVIDER)
    return plan


def file_session(
    model_path: Path | str,
    providers: Sequence[str] = (CPU_PROVIDER,),
    intra_op_threads: int = 1,
) -> Any:
    """A session of one ONNX file (evaluation on the CPU, benchmarks on any provider).

    With one intra-op thread ONNX Runtime computes in the calling thread, so that thread's CPU
    clock measures the model alone (:mod:`models.evaluation` times it that way).
    """
    import onnxruntime as ort

    return ort.InferenceSession(
        str(model_path), session_options(intra_op_threads), providers=list(providers)
    )


def session_options(intra_op_threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, intra_op_threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers are not the user's
    # Spinning worker threads burn a core between batches; the gateway needs it for sockets.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(
    bundle_dir: Path,
    *,
    providers: Sequence[str] | None = None,
    artifact: str | None = None,
    intra_op_threads: int = 1,
) -> tuple[Any, str, str]:
    """(session, provider actually used, artifact) for a bundle, CUDA first when it works."""
    global _cuda_works
    import onnxruntime as ort

    present = [kind for kind, name in ARTIFACT_FILES.items() if (bundle_dir / name).exists()]
    plan = provider_plan(providers, ort.get_available_providers())
    options = session_options(intra_op_threads)
    if plan[0] == CUDA_PROVIDER and _cuda_works is not False:
        chosen = choose_artifact(CUDA_PROVIDER, present, artifact)
        session = ort.InferenceSession(
            str(artifact_path(bundle_dir, chosen)), options, providers=plan
        )
        actual = session.get_providers()[0]
        _cuda_works = actual == CUDA_PROVIDER
        if _cuda_works:
            return session, actual, chosen
        log.warning("CUDA is listed by onnxruntime but did not start; serving on %s", actual)
    chosen = choose_artifact(CPU_PROVIDER, present, artifact)
    session = ort.InferenceSession(
        str(artifact_path(bundle_dir, chosen)), options, providers=[CPU_PROVIDER]
    )
    return session, session.get_providers()[0], chosen


_blas_threads: int | None = None


def limit_blas_threads(threads: int) -> None:
    """Cap NumPy's BLAS (OpenBLAS) threads for this process, once.

    Log-mel ends in a small matrix product (frames × 257 bins by 257 × 40 mels). OpenBLAS
    splits even that across its threads, whose hand-offs dominate on a small or busy machine:
    measured on 2 loaded cores, log-mel of one window took 16.3 ms with the default threads and
    0.18 ms with one (8 windows: 133 ms vs 2.1 ms). A serving process wants the latter. The
    cap is process-wide (that is how OpenBLAS works), hence applied once, by the engine.
    """
    global _blas_threads
    if _blas_threads is not None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=max(1, threads), user_api="blas")
    _blas_threads = max(1, threads)


def content_version(bundle_dir: Path) -> str:
    """A stable id for a bundle that is not in the registry: ``local-`` + FP32 model hash."""
    digest = hashlib.sha256((bundle_dir / ARTIFACT_FILES["fp32"]).read_bytes()).hexdigest()
    return f"local-{digest[:12]}"


def load_model(
    bundle_dir: Path,
    *,
    version: str | None = None,
    providers: Sequence[str] | None = None,
    artifact: str | None = None,
    intra_op_threads: int = 1,
    warmup_batch: int = 1,
) -> LoadedModel:
    """Open, check and warm up a bundle (batch 1 and ``warmup_batch`` zero windows)."""
    manifest = read_bundle_manifest(bundle_dir)
    if manifest["feature_version"] != FEATURE_VERSION:
        raise IncompatibleModel(
            f"{bundle_dir} was trained on features {manifest['feature_version']!r} but this code "
            f"computes {FEATURE_VERSION!r}; retrain or serve it with the matching release"
        )
    session, provider, chosen = open_session(
        bundle_dir, providers=providers, artifact=artifact, intra_op_threads=intra_op_threads
    )
    model = LoadedModel(
        session=session,
        version=version or content_version(bundle_dir),
        provider=provider,
        artifact=chosen,
        labels=tuple(manifest["labels"]),
        input_name=manifest.get("input_name", "logmel"),
        output_name=manifest.get("output_name", "probs"),
        feature_version=manifest["feature_version"],
        window_samples=int(manifest.get("window_samples", 16000)),
        bundle_dir=bundle_dir,
        input_kind=input_kind(manifest),
    )
    warm_up(model, sizes=sorted({1, max(1, warmup_batch)}))
    return model


def warm_up(model: LoadedModel, sizes: Sequence[int]) -> None:
    """Run zero windows through features and model so the first real request is not slow.

    The first run of each batch shape allocates arenas (and on CUDA picks kernels); it also
    checks the output width against the labels, so a broken bundle fails here, not in traffic.
    """
    for size in sizes:
        probs = model.run(_silent_inputs(size, model.window_samples, model.input_kind))
        if probs.shape != (size, len(model.labels)):
            raise IncompatibleModel(
                f"{model.bundle_dir}: output {model.output_name} has shape {probs.shape}, "
                f"expected ({size}, {len(model.labels)}) for {len(model.labels)} labels"
            )


@lru_cache(maxsize=8)
def _silent_inputs(size: int, window_samples: int, kind: str) -> np.ndarray:
    """Model input of ``size`` silent windows, computed once per process (swaps reuse it)."""
    inputs = model_inputs(kind, np.zeros((size, window_samples), np.float32))
    inputs.setflags(write=False)
    return inputs
