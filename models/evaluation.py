"""Evaluate a model bundle's ONNX artifacts: quality on labelled windows, and CPU speed.

Quality: accuracy, macro-F1 and per-class F1 (scikit-learn) over the model's label set, plus
the confusion matrix (rows = truth, columns = prediction, label order of ``model.json``).
Speed (ONNX Runtime, CPU provider, one intra-op thread so figures are per core and less noisy
on a shared machine): latency p50/p99 of one window at batch 1, and windows/s at batch 64.
Latency is the model alone; log-mel of a 1-s window adds ~0.1 ms.

Labels outside the model's vocabulary count as ``_unknown_``: that is what the class means
(any word that is not a keyword). FSDD's digits are all out of vocabulary, so on FSDD the
accuracy is the rate at which digits are correctly rejected as ``_unknown_``; the report
carries ``n_out_of_vocabulary`` so such a run is recognisable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features import fit_window, logmel_batch
from features.corpus import load_audio, read_manifest
from models.bundle_files import artifact_path
from models.bundle_files import read_manifest as read_bundle_manifest
from models.dataset import SPLIT_SEED, SPLIT_TEST_FRACTION, UNKNOWN
from models.export import INPUT_NAME

CPU_PROVIDER = "CPUExecutionProvider"
INFERENCE_BATCH = 256
THROUGHPUT_BATCH = 64
LATENCY_WARMUP_RUNS = 20


@dataclass(frozen=True)
class SpeedSettings:
    """How long to time a model (tests use a light setting)."""

    latency_runs: int = 500
    throughput_seconds: float = 1.0
    threads: int = 1


LIGHT_SPEED = SpeedSettings(latency_runs=50, throughput_seconds=0.2)


@dataclass
class EvaluationReport:
    """One artifact of one bundle on one labelled set."""

    artifact: str
    dataset: str
    labels: list[str]
    n_windows: int
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    confusion: list[list[int]]
    n_out_of_vocabulary: int = 0
    provider: str = CPU_PROVIDER
    latency_us_p50: float | None = None
    latency_us_p99: float | None = None
    windows_per_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat numeric metrics (for model.json and MLflow), keys prefixed with ``prefix``."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        for name in ("latency_us_p50", "latency_us_p99", "windows_per_s"):
            value = getattr(self, name)
            if value is not None:
                out[f"{prefix}{name}"] = float(value)
        return out


def open_session(
    model_path: Path | str, providers: Sequence[str] | None = None, threads: int = 1
) -> Any:
    """An ONNX Runtime session (CPU by default) with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(model_path), options, providers=list(providers or [CPU_PROVIDER])
    )


def predict_probs(session: Any, logmel: np.ndarray, batch: int = INFERENCE_BATCH) -> np.ndarray:
    """Probabilities ``[N, n_labels]`` for log-mel ``[N, frames, mels]``."""
    out = [
        session.run(None, {INPUT_NAME: logmel[start : start + batch].astype(np.float32)})[0]
        for start in range(0, len(logmel), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def quality(
    truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]
) -> tuple[float, float, dict[str, float], list[list[int]]]:
    """(accuracy, macro-F1 over classes present in truth, per-class F1, confusion matrix)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    present = sorted(set(truth.tolist()))
    per_class = f1_score(truth, predicted, labels=present, average=None, zero_division=0)
    matrix = confusion_matrix(truth, predicted, labels=list(range(len(labels))))
    return (
        float(accuracy_score(truth, predicted)),
        float(np.mean(per_class)) if len(present) else 0.0,
        {labels[c]: float(f) for c, f in zip(present, per_class, strict=True)},
        matrix.astype(int).tolist(),
    )


def measure_speed(
    session: Any, logmel: np.ndarray, settings: SpeedSettings
) -> tuple[float, float, float]:
    """(latency p50 µs, latency p99 µs) at batch 1 and windows/s at batch 64."""
    one = logmel[:1].astype(np.float32)
    for _ in range(LATENCY_WARMUP_RUNS):
        session.run(None, {INPUT_NAME: one})
    times_us = np.empty(settings.latency_runs)
    for i in range(settings.latency_runs):
        started = time.perf_counter_ns()
        session.run(None, {INPUT_NAME: one})
        times_us[i] = (time.perf_counter_ns() - started) / 1e3
    p50, p99 = np.percentile(times_us, [50, 99])
    batch = logmel[np.resize(np.arange(len(logmel)), THROUGHPUT_BATCH)].astype(np.float32)
    session.run(None, {INPUT_NAME: batch})
    runs, started_s = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started_s < settings.throughput_seconds:
        session.run(None, {INPUT_NAME: batch})
        runs += 1
    return float(p50), float(p99), runs * THROUGHPUT_BATCH / (time.perf_counter() - started_s)


def evaluate_bundle(
    bundle_dir: Path | str,
    windows: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    artifact: str = "fp32",
    *,
    dataset: str = "windows",
    speed: SpeedSettings | None = SpeedSettings(),
    providers: Sequence[str] | None = None,
    logmel: np.ndarray | None = None,
) -> EvaluationReport:
    """Score one artifact (``fp32``, ``int8``, ``fp16``) on 1-s 16 kHz windows ``[N, 16000]``.

    ``labels`` are strings (out-of-vocabulary → ``_unknown_``) or indices into the bundle's
    labels. ``speed=None`` skips timing. Pass ``logmel`` to reuse precomputed features.
    """
    manifest = read_bundle_manifest(bundle_dir)
    vocabulary: list[str] = list(manifest["labels"])
    truth, n_oov = _label_indices(labels, vocabulary)
    features = logmel if logmel is not None else logmel_batch(windows)
    session = open_session(
        artifact_path(bundle_dir, artifact), providers, speed.threads if speed else 1
    )
    predicted = predict_probs(session, features).argmax(axis=1)
    accuracy, macro_f1, per_class, confusion = quality(truth, predicted, vocabulary)
    report = EvaluationReport(
        artifact=artifact,
        dataset=dataset,
        labels=vocabulary,
        n_windows=len(truth),
        accuracy=accuracy,
        macro_f1=macro_f1,
        per_class_f1=per_class,
        confusion=confusion,
        n_out_of_vocabulary=n_oov,
        provider=session.get_providers()[0],
    )
    if speed is not None and len(features):
        report.latency_us_p50, report.latency_us_p99, report.windows_per_s = measure_speed(
            session, features, speed
        )
    return report


def evaluate_artifacts(
    bundle_dir: Path | str,
    windows: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    artifacts: Sequence[str] = ("fp32", "int8", "fp16"),
    **kwargs: Any,
) -> dict[str, EvaluationReport]:
    """:func:`evaluate_bundle` for every artifact on the same windows (features computed once)."""
    features = kwargs.pop("logmel", None)
    features = logmel_batch(windows) if features is None else features
    return {
        a: evaluate_bundle(bundle_dir, windows, labels, a, logmel=features, **kwargs)
        for a in artifacts
    }


def manifest_windows(
    manifest_csv: Path | str,
    *,
    heldout_only: bool = False,
    test_fraction: float = SPLIT_TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> tuple[np.ndarray, list[str], str]:
    """(windows, labels, dataset name) of a manifest: resampled to 16 kHz, fitted to 1 s.

    With ``heldout_only``: the ``test`` rows when the manifest has a split column, otherwise
    the held-out speakers of the training split.
    """
    from features.corpus import split_by_speaker

    manifest_csv = Path(manifest_csv)
    clips = read_manifest(manifest_csv)
    name = f"{manifest_csv.parent.name}/{manifest_csv.name}"
    if heldout_only:
        if any(clip.split for clip in clips):
            clips, name = [c for c in clips if c.split == "test"], f"{name}#split=test"
        else:
            clips = split_by_speaker(clips, test_fraction, seed)[1]
            name = f"{name}#heldout-speakers({test_fraction},{seed})"
    windows = np.zeros((len(clips), 16_000), dtype=np.float32)
    for row, clip in enumerate(clips):
        windows[row] = fit_window(load_audio(clip.path))
    return windows, [clip.label for clip in clips], name


def evaluate_manifest(
    bundle_dir: Path | str,
    manifest_csv: Path | str,
    artifact: str = "fp32",
    *,
    heldout_only: bool = False,
    speed: SpeedSettings | None = None,
    providers: Sequence[str] | None = None,
) -> EvaluationReport:
    """Score one artifact on the clips of a manifest (e.g. the real recordings' or FSDD's)."""
    windows, labels, name = manifest_windows(manifest_csv, heldout_only=heldout_only)
    return evaluate_bundle(
        bundle_dir, windows, labels, artifact, dataset=name, speed=speed, providers=providers
    )


def save_confusion_png(report: EvaluationReport, path: Path | str) -> Path:
    """The confusion matrix as a PNG (counts in the cells, rows = truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(report.confusion)
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(report.labels))
    ax.set_xticks(ticks, report.labels, rotation=60, ha="right")
    ax.set_yticks(ticks, report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{report.artifact}: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}\n"
        f"{report.dataset}",
        fontsize=8,
        wrap=True,
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > threshold else "black",
            )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _label_indices(
    labels: Sequence[str] | np.ndarray, vocabulary: list[str]
) -> tuple[np.ndarray, int]:
    values = list(labels)
    if values and not isinstance(values[0], str):
        return np.asarray(values, dtype=np.int64), 0
    unknown = vocabulary.index(UNKNOWN)
    index = {label: i for i, label in enumerate(vocabulary)}
    truth = np.asarray([index.get(label, unknown) for label in values], dtype=np.int64)
    return truth, sum(label not in index for label in values)
