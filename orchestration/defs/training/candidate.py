"""Train, export, evaluate and register one candidate: the work behind ``candidate_model``.

Everything here calls into :mod:`models` (training, export, evaluation, registry); this module
only decides what goes in (the training side of the set, the preset) and what comes out (the
registered version, its metrics, the drift reference logged with it).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from lake_schemas import Lake
    from models.registry import Registry
    from orchestration.training_data import TrainingSet


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
    """Time each artifact briefly (50 runs) instead of fully (500): for tests and demos."""


@dataclass(frozen=True)
class CandidateModel:
    """A registered candidate (the asset's value)."""

    version: str
    run_id: str
    experiment_id: str
    bundle_dir: str
    preset: str
    metrics: dict[str, float]
    train_seconds: float
    confusion_png: str | None = None
    params: dict[str, object] = field(default_factory=dict)

    def confusion_markdown(self) -> str:
        """The confusion matrix as a Markdown image (inline PNG) with the file's path."""
        if not self.confusion_png or not Path(self.confusion_png).exists():
            return "no confusion matrix"
        data = base64.b64encode(Path(self.confusion_png).read_bytes()).decode()
        return f"![confusion matrix](data:image/png;base64,{data})\n\n`{self.confusion_png}`"


def train_candidate(
    training_set: TrainingSet,
    config: TrainingConfig,
    *,
    default_preset: str,
    lake: Lake,
    registry: Registry,
    work_dir: Path,
    log: Callable[[str], None],
) -> CandidateModel:
    """Train on the set's training devices, export the bundle, evaluate it, register it."""
    from features import logmel_batch
    from models.bundle import calibration_rows, write_bundle, write_manifest
    from models.bundle_files import read_manifest
    from models.evaluation import LIGHT_SPEED, SpeedSettings, evaluate_artifacts, save_confusion_png
    from models.training import preset, train
    from orchestration.drift_reference import log_reference
    from orchestration.promotion import heldout_of
    from orchestration.training_data import reference_features

    name = config.preset or default_preset
    train_config = preset(name, epochs=config.epochs, ensemble=config.ensemble, seed=config.seed)
    labelled, train_rows, _, event_ids = training_set.load()
    training = labelled.subset(train_rows)
    log(f"training preset {name!r} on {len(training)} windows")
    trained = train(
        training,
        train_config,
        on_epoch=lambda r: log(f"member {r.member} epoch {r.epoch}/{r.epochs} loss {r.loss:.3f}"),
    )
    calibration = logmel_batch(training.windows[calibration_rows(training.labels)])
    bundle_dir = write_bundle(work_dir / "bundle", trained, calibration)

    heldout = heldout_of(training_set)
    speed = LIGHT_SPEED if config.light_timing else SpeedSettings()
    reports = evaluate_artifacts(
        bundle_dir, heldout.windows, list(heldout.labels), dataset=heldout.name, speed=speed
    )
    metrics = {
        **reports["fp32"].metrics(),
        **reports["int8"].metrics("int8_"),
        **reports["fp16"].metrics("fp16_"),
    }
    manifest = read_manifest(bundle_dir)
    write_manifest(bundle_dir, {**manifest, "metrics": metrics})
    # the served CPU artifact is INT8: its confusion matrix is the one that matters
    confusion = save_confusion_png(reports["int8"], work_dir / "confusion_int8.png")
    params = {
        **train_config.to_dict(),
        "preset": name,
        "training_set": training_set.set_id,
        "train_windows": len(training),
        "heldout_windows": len(heldout.labels),
        "heldout_dataset": heldout.name,
    }
    evaluation_rows = [
        {k: v for k, v in report.to_dict().items() if k not in ("confusion", "extra", "labels")}
        for report in reports.values()
    ]
    version = registry.log_bundle(
        bundle_dir,
        params,
        metrics,
        evaluation=evaluation_rows,
        confusion_png=confusion,
        run_name=f"lake-{training_set.set_id}-{name}",
    )
    train_ids = [str(event_ids[i]) for i in train_rows]
    log_reference(registry, version, reference_features(lake, train_ids), training_set.built_at)
    run_id = str(registry.client.get_model_version(registry.model_name, version).run_id)
    run = registry.client.get_run(run_id)
    log(f"registered version {version}: accuracy {metrics['accuracy']:.3f} on {heldout.name}")
    return CandidateModel(
        version=version,
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        bundle_dir=str(bundle_dir),
        preset=name,
        metrics={k: float(v) for k, v in metrics.items()},
        train_seconds=trained.train_seconds,
        confusion_png=str(confusion),
        params=params,
    )
