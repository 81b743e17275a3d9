"""The one training pipeline: train, export, evaluate, register the bundle as ``challenger``.

``sonolake train`` (the real recordings) and the Dagster ``candidate_model`` asset (windows from
the lake) both call :func:`train_candidate`, so a model is registered the same way whichever
path made it: the same params, the same metrics (FP32 unprefixed, ``int8_…``, ``fp16_…``), the
learning curves as step metrics (loss, training and held-out accuracy per epoch), the same
evaluation table and the same confusion matrix, the
INT8 artifact's (what CPU serving runs) on the held-out set. The bundle folder keeps the
matrix (``confusion.png``) and the full reports (``evaluation.json``) beside the models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.bundle import (
    calibration_rows,
    read_bundle_manifest,
    write_bundle,
    write_bundle_manifest,
)
from models.dataset import HeldoutSet, LabelledWindows, label_index
from models.evaluation import (
    EvaluationReport,
    SpeedProbe,
    artifact_metrics,
    evaluate_artifacts,
    save_confusion_png,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from models.embedding_head import HeadConfig, TrainedHead
    from models.epochs import EpochReport
    from models.registry import Registry
    from models.training import MonitorSet, TrainConfig, TrainedModel

CONFUSION_FILE = "confusion.png"
EVALUATION_FILE = "evaluation.json"
CONFUSION_ARTIFACT = "int8"
"""The artifact whose confusion matrix is drawn: the one CPU serving runs."""


@dataclass(frozen=True)
class Candidate:
    """A trained, evaluated and registered model."""

    version: str
    run_id: str
    experiment_id: str
    bundle_dir: Path
    preset: str
    metrics: dict[str, float]
    reports: dict[str, EvaluationReport]
    params: dict[str, Any]
    train_seconds: float
    confusion_png: Path


CURVES = ("train_loss", "train_accuracy", "heldout_accuracy")
"""Step metrics of every run (one point per epoch): mean training loss, accuracy on the
augmented training batches, accuracy on the held-out set after the epoch."""


def learning_curves(history: Sequence[EpochReport]) -> dict[str, list[float]]:
    """The :data:`CURVES` per epoch; an ensemble gets one of each per member (``…_member_<m>``).

    ``heldout_accuracy`` is there when training was given the held-out set to monitor.
    """
    members = sorted({report.member for report in history})
    curves: dict[str, list[float]] = {}
    for member in members:
        reports = sorted((r for r in history if r.member == member), key=lambda r: r.epoch)
        suffix = "" if len(members) == 1 else f"_member_{member}"
        values = {
            "train_loss": [r.loss for r in reports],
            "train_accuracy": [r.accuracy for r in reports],
            "heldout_accuracy": [
                r.monitor_accuracy for r in reports if r.monitor_accuracy is not None
            ],
        }
        for name in CURVES:
            if values[name]:
                curves[name + suffix] = [float(v) for v in values[name]]
    return curves


def monitor_set(heldout: HeldoutSet) -> MonitorSet:
    """The held-out windows as the CNN's per-epoch monitor (log-mel once, label indices)."""
    from features import logmel_batch
    from models.training import MonitorSet

    return MonitorSet(logmel=logmel_batch(heldout.windows), labels=_label_indices(heldout))


def _label_indices(heldout: HeldoutSet) -> np.ndarray:
    return np.asarray([label_index(label) for label in heldout.labels], dtype=np.int32)


def fit(
    training: LabelledWindows,
    heldout: HeldoutSet,
    config: TrainConfig | HeadConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainedModel | TrainedHead:
    """Train the model family ``config`` names, monitoring ``heldout`` after every epoch."""
    from models.embedding_head import HeadConfig, pooled_embeddings, train_head
    from models.training import train

    if isinstance(config, HeadConfig):
        monitor = (pooled_embeddings(heldout.windows), _label_indices(heldout))
        return train_head(training, config, monitor=monitor, on_epoch=on_epoch)
    return train(training, config, monitor=monitor_set(heldout), on_epoch=on_epoch)


def train_candidate(
    training: LabelledWindows,
    heldout: HeldoutSet,
    *,
    preset_name: str,
    config: TrainConfig | HeadConfig,
    bundle_dir: Path,
    registry: Registry,
    speed: SpeedProbe | None = None,
    params: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    drift_reference: pa.Table | None = None,
    snapshot_at: datetime | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Candidate:
    """Train on ``training``, write the bundle to ``bundle_dir``, evaluate every artifact on
    ``heldout``, register it as the ``challenger``; returns what was registered.

    ``params`` are logged with the training knobs (e.g. where the data came from).
    ``drift_reference`` (the training events' summary features) is attached to the version
    when given, with ``snapshot_at``, the time its data was read. ``on_stage`` hears
    ``export``, ``evaluate`` and ``register`` as each starts.
    """
    from models.drift_reference import log_reference

    stage = on_stage or (lambda _name: None)
    trained = fit(training, heldout, config, on_epoch)
    stage("export")
    write_bundle(bundle_dir, trained, training.windows[calibration_rows(training.labels)])
    stage("evaluate")
    reports = evaluate_artifacts(bundle_dir, heldout, speed=speed or SpeedProbe())
    metrics = artifact_metrics(reports)
    manifest = read_bundle_manifest(bundle_dir)
    manifest["metrics"] = metrics
    manifest["evaluation"] = {"dataset": heldout.name, "windows": len(heldout.labels)}
    write_bundle_manifest(bundle_dir, manifest)
    confusion = save_confusion_png(reports[CONFUSION_ARTIFACT], bundle_dir / CONFUSION_FILE)
    (bundle_dir / EVALUATION_FILE).write_text(
        json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=2) + "\n"
    )
    logged_params = {
        **config.to_dict(),
        "preset": preset_name,
        "train_windows": len(training),
        "heldout_windows": len(heldout.labels),
        "heldout_dataset": heldout.name,
        **(params or {}),
    }
    stage("register")
    version = registry.log_bundle(
        bundle_dir,
        logged_params,
        metrics,
        evaluation=[report.table_row() for report in reports.values()],
        confusion_png=confusion,
        run_name=run_name,
        curves=learning_curves(trained.history),
    )
    if drift_reference is not None:
        log_reference(registry, version, drift_reference, snapshot_at)
    run_id = str(registry.client.get_model_version(registry.model_name, version).run_id)
    return Candidate(
        version=version,
        run_id=run_id,
        experiment_id=str(registry.client.get_run(run_id).info.experiment_id),
        bundle_dir=bundle_dir,
        preset=preset_name,
        metrics=metrics,
        reports=reports,
        params=logged_params,
        train_seconds=trained.train_seconds,
        confusion_png=confusion,
    )
