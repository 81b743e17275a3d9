"""Score a bundle on a labelled set: what ``sonolake evaluate`` prints and the gate compares.

Quality and speed come from :func:`models.evaluation.evaluate_bundle` (accuracy, macro-F1 and
per-class F1 over the classes present; out-of-vocabulary words count as ``_unknown_``; batch-1
latency and batch-64 throughput on the CPU with one intra-op thread). The gate's latency rule
needs a p99 that a noisy neighbour cannot fail on its own, so the batch-1 timing is repeated
for a few rounds and the round with the best p99 is kept (benchmarks, not this, are where speed
is tracked over time). Latency is the model alone: log-mel of a window adds ~0.1 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.bundle_files import artifact_path
from models.evaluation_log import EvaluationRecord

THROUGHPUT_BATCH = 64


@dataclass(frozen=True)
class SpeedProbe:
    """How hard :func:`score_bundle` times a model (tests use a lighter probe)."""

    latency_runs: int = 200
    """session.run calls per latency round at batch 1."""
    latency_rounds: int = 3
    """Rounds of latency (and throughput) timing; the round with the best p99 counts."""
    throughput_s: float = 0.2
    """How long each batch-64 throughput probe runs, in seconds."""


@dataclass(frozen=True)
class HeldoutSet:
    """Labelled 1-s windows (16 kHz float32) and a name that says where they came from."""

    name: str
    windows: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.windows.ndim != 2 or len(self.windows) != len(self.labels):
            raise ValueError("windows must be [N, samples] with one label per window")
        if not len(self.labels):
            raise ValueError(f"{self.name}: no labelled windows")


def heldout_from_manifest(manifest: Path | str, *, heldout_only: bool = True) -> HeldoutSet:
    """Windows of a manifest's clips; with ``heldout_only``, only the held-out side.

    A manifest with a ``split`` column keeps its ``test`` rows; otherwise speakers are split
    exactly as training splits them (same fraction, same hash seed), so the score never
    includes a speaker the model was trained on.
    """
    from models.evaluation import manifest_windows

    windows, labels, name = manifest_windows(manifest, heldout_only=heldout_only)
    return HeldoutSet(name, windows, tuple(labels))


@dataclass(frozen=True)
class ModelScore:
    """One artifact of one model on one held-out set."""

    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    n_windows: int
    artifact: str
    provider: str
    latency_us_p50: float | None = None
    latency_us_p99: float | None = None
    windows_per_s: float | None = None
    model_version: str | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def record(
        self, version: str, artifact: str, dataset: str, action: str, **verdict: object
    ) -> EvaluationRecord:
        """This score as a ``monitoring.model_evaluations`` row."""
        return EvaluationRecord(
            model_version=version,
            artifact=artifact,
            dataset=dataset,
            action=action,
            accuracy=self.accuracy,
            macro_f1=self.macro_f1,
            per_class_f1=self.per_class_f1,
            latency_us_p50=self.latency_us_p50,
            latency_us_p99=self.latency_us_p99,
            windows_per_s=self.windows_per_s,
            **verdict,  # type: ignore[arg-type]
        )


def score_bundle(
    bundle_dir: Path,
    heldout: HeldoutSet,
    artifact: str = "int8",
    *,
    measure_speed: bool = True,
    speed: SpeedProbe | None = None,
    model_version: str | None = None,
) -> ModelScore:
    """Quality of ``artifact`` on ``heldout`` (CPU), plus batch-1 latency and batch-64 speed.

    ``model_version`` defaults to the bundle's content version (``local-…``).
    """
    from features import logmel_batch
    from models.evaluation import SpeedSettings, evaluate_bundle, measure_speed, open_session
    from models.session import content_version

    features = logmel_batch(heldout.windows)
    report = evaluate_bundle(
        bundle_dir,
        heldout.windows,
        heldout.labels,
        artifact,
        dataset=heldout.name,
        speed=None,
        logmel=features,
    )
    p50 = p99 = throughput = None
    if measure_speed:
        probe = speed or SpeedProbe()
        settings = SpeedSettings(
            latency_runs=probe.latency_runs, throughput_seconds=probe.throughput_s, threads=1
        )
        session = open_session(artifact_path(bundle_dir, artifact), threads=1)
        timing = features[:THROUGHPUT_BATCH]
        rounds = [measure_speed(session, timing, settings) for _ in range(probe.latency_rounds)]
        p50, p99, _ = min(rounds, key=lambda r: r[1])
        throughput = max(r[2] for r in rounds)
    return ModelScore(
        accuracy=report.accuracy,
        macro_f1=report.macro_f1,
        per_class_f1=dict(report.per_class_f1),
        n_windows=report.n_windows,
        artifact=artifact,
        provider=report.provider,
        latency_us_p50=p50,
        latency_us_p99=p99,
        windows_per_s=throughput,
        model_version=model_version or content_version(Path(bundle_dir)),
        extra={"n_out_of_vocabulary": float(report.n_out_of_vocabulary)},
    )
