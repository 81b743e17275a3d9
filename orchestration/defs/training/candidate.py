"""What the Dagster side of training adds to :func:`models.candidate.train_candidate`.

The run config (:class:`TrainingConfig`, shown in the launchpad) and how a registered
candidate and a gate decision read in the UI (asset metadata).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from models.candidate import Candidate
    from models.promotion import PromotionDecision
    from orchestration.resources import ModelRegistryResource


class TrainingConfig(dg.Config):
    """Knobs of one training run (the launchpad shows them; the demo sets them)."""

    preset: str | None = None
    """``quick`` or ``full``; None takes the environment's default (SONOLAKE_TRAINING_PRESET)."""
    epochs: int | None = None
    """Override the preset's number of epochs."""
    ensemble: int | None = None
    """Override how many networks are trained and averaged."""
    seed: int = 0
    light_timing: bool = False
    """Time each artifact briefly instead of fully: for tests and demos."""


def _confusion_markdown(png: Path) -> str:
    """The confusion matrix as a Markdown image (inline PNG) with the file's path."""
    if not png.exists():
        return "no confusion matrix"
    data = base64.b64encode(png.read_bytes()).decode()
    return f"![confusion matrix](data:image/png;base64,{data})\n\n`{png}`"


def candidate_metadata(candidate: Candidate, registry: ModelRegistryResource) -> dict[str, Any]:
    """The registered version, its key metrics and links to MLflow."""
    return {
        "model_version": candidate.version,
        "preset": candidate.preset,
        "accuracy": dg.MetadataValue.float(candidate.metrics["accuracy"]),
        "macro_f1": dg.MetadataValue.float(candidate.metrics["macro_f1"]),
        "int8_accuracy": dg.MetadataValue.float(candidate.metrics["int8_accuracy"]),
        "train_seconds": dg.MetadataValue.float(candidate.train_seconds),
        "mlflow_run": dg.MetadataValue.url(
            registry.run_url(candidate.experiment_id, candidate.run_id)
        ),
        "mlflow_model": dg.MetadataValue.url(registry.model_url(candidate.version)),
        "bundle": dg.MetadataValue.path(str(candidate.bundle_dir)),
        "confusion_matrix": dg.MetadataValue.md(_confusion_markdown(candidate.confusion_png)),
    }


def evaluation_metadata(decision: PromotionDecision) -> dict[str, Any]:
    """Numbers the UI plots across evaluations, the verdict and why."""
    candidate = decision.candidate
    metadata: dict[str, Any] = {
        "candidate_version": decision.candidate_version,
        "champion_before": decision.champion_before or "none",
        "gate_passed": dg.MetadataValue.bool(decision.passed),
        "accuracy": dg.MetadataValue.float(candidate.accuracy),
        "macro_f1": dg.MetadataValue.float(candidate.macro_f1),
        "heldout_windows": dg.MetadataValue.int(candidate.n_windows),
        "dataset": decision.dataset,
        "artifact": decision.artifact,
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        "per_class_f1": dg.MetadataValue.md(
            "| label | F1 |\n| --- | --- |\n"
            + "\n".join(f"| {k} | {v:.3f} |" for k, v in candidate.per_class_f1.items())
        ),
    }
    for name in ("latency_us_p50", "latency_us_p99", "windows_per_s"):
        value = getattr(candidate, name)
        if value is not None:
            metadata[name] = dg.MetadataValue.float(float(value))
    if decision.champion is not None:
        metadata["champion_accuracy"] = dg.MetadataValue.float(decision.champion.accuracy)
    return metadata
