"""``sonolake train``: train on the real recordings, export the bundle, evaluate held-out speakers.

The held-out side is fixed (20 % of speakers, split seed 0) so the accuracy printed here is the
one ``sonolake evaluate`` and the promotion gate see. ``--seed`` changes the training run
(initialisation, augmentation), never the split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sonolake.errors import BadInput, WorkFailed

_out = Console()
_err = Console(stderr=True)

EVALUATION_FILE = "evaluation.json"
CONFUSION_FILE = "confusion.png"


def default_bundle_dir(state_path: Path, preset: str) -> Path:
    """Where ``sonolake train`` leaves a preset's bundle (benchmarks and the demo look here)."""
    return state_path / "models" / preset


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""

    @app.command("train")
    def train_command(
        preset: Annotated[
            str, typer.Option("--preset", help="quick (a small model, seconds) or full.")
        ] = "full",
        data_dir: Annotated[
            Path | None,
            typer.Option("--data-dir", help="Folder holding speech_commands/ (default: settings)."),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", help="Bundle folder to write (default: <state_dir>/models/<preset>)."
            ),
        ] = None,
        epochs: Annotated[
            int | None, typer.Option("--epochs", min=1, help="Override the preset's epochs.")
        ] = None,
        seed: Annotated[
            int | None, typer.Option("--seed", help="Training seed (never changes the split).")
        ] = None,
        ensemble: Annotated[
            int | None, typer.Option("--ensemble", min=1, help="Members averaged in one model.")
        ] = None,
        json_path: Annotated[
            Path | None, typer.Option("--json", help="Also write the summary as JSON here.")
        ] = None,
    ) -> None:
        """Train the keyword classifier on the real recordings and export its ONNX bundle."""
        from sonolake.settings import get_settings

        settings = get_settings(data_dir=data_dir)
        bundle_dir = (out or default_bundle_dir(settings.state_path, preset)).expanduser().resolve()
        summary = run_training(
            settings.data_dir, bundle_dir, preset, epochs=epochs, seed=seed, ensemble=ensemble
        )
        _print_summary(summary)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(summary, indent=2) + "\n")


def run_training(
    data_dir: Path,
    bundle_dir: Path,
    preset_name: str,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    ensemble: int | None = None,
) -> dict[str, Any]:
    """Load → split by speaker → train → export → evaluate every artifact; returns the summary."""
    import numpy as np

    from features import logmel_batch
    from features.corpus import SPEECH_COMMANDS, DataMissing, corpus_manifest, read_manifest
    from models.bundle import calibration_rows, write_bundle, write_manifest
    from models.bundle_files import read_manifest as read_bundle_manifest
    from models.dataset import LabelledWindows, split_by_group
    from models.evaluation import LIGHT_SPEED, SpeedSettings, evaluate_artifacts, save_confusion_png
    from models.training import EpochReport, preset, train

    try:
        config = preset(preset_name, epochs=epochs, seed=seed, ensemble=ensemble)
        manifest = corpus_manifest(data_dir, SPEECH_COMMANDS)
    except (ValueError, DataMissing) as exc:
        raise BadInput(str(exc)) from exc
    started = time.perf_counter()
    with _progress() as progress:
        clips = read_manifest(manifest)
        loading = progress.add_task("load recordings", total=1)
        data = LabelledWindows.from_clips(clips)
        progress.update(loading, completed=1)
        train_rows, test_rows = split_by_group(data.groups)
        train_set, test_set = data.subset(train_rows), data.subset(test_rows)
        training = progress.add_task(
            f"train {preset_name} ({len(train_set)} windows)", total=config.epochs * config.ensemble
        )

        def on_epoch(report: EpochReport) -> None:
            progress.update(
                training,
                advance=1,
                description=f"train member {report.member + 1}/{config.ensemble} "
                f"epoch {report.epoch}/{report.epochs} loss {report.loss:.3f}",
            )

        model = train(train_set, config, on_epoch=on_epoch)
        exporting = progress.add_task("export ONNX fp32/int8/fp16", total=1)
        calibration = logmel_batch(train_set.windows[calibration_rows(train_set.labels)])
        write_bundle(bundle_dir, model, calibration)
        progress.update(exporting, completed=1)
        evaluating = progress.add_task("evaluate held-out speakers", total=1)
        test_logmel = logmel_batch(test_set.windows)
        try:
            reports = evaluate_artifacts(
                bundle_dir,
                test_set.windows,
                test_set.labels,
                logmel=test_logmel,
                speed=LIGHT_SPEED if preset_name == "quick" else SpeedSettings(),
            )
        except Exception as exc:  # an artifact that does not load is a failed run
            raise WorkFailed(f"evaluating {bundle_dir} failed: {exc}") from exc
        progress.update(evaluating, completed=1)
    metrics: dict[str, float] = {}
    for artifact, report in reports.items():
        metrics.update(report.metrics("" if artifact == "fp32" else f"{artifact}_"))
    speakers = _speakers(test_set.groups)
    dataset = f"speech_commands held-out speakers: {len(test_set)} windows, {speakers} speakers"
    for report in reports.values():
        report.dataset = dataset
    save_confusion_png(reports["fp32"], bundle_dir / CONFUSION_FILE)
    (bundle_dir / EVALUATION_FILE).write_text(
        json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=2) + "\n"
    )
    bundle_manifest = read_bundle_manifest(bundle_dir)
    bundle_manifest["metrics"] = metrics
    bundle_manifest["evaluation"] = {"dataset": dataset, "split": "speaker 20 %, seed 0"}
    write_manifest(bundle_dir, bundle_manifest)
    return {
        "bundle": str(bundle_dir),
        "preset": preset_name,
        "train_windows": len(train_set),
        "test_windows": len(test_set),
        "test_speakers": speakers,
        "train_seconds": round(model.train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "metrics": metrics,
        "per_class_f1": reports["fp32"].per_class_f1,
        "chance_accuracy": float(np.max(np.bincount(test_set.labels)) / len(test_set)),
    }


def _speakers(groups: Any) -> int:
    """Distinct speakers among group ids (noise clips carry a per-clip ``anon-`` id)."""
    return len({g for g in groups if not str(g).startswith("anon-")})


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=_err,
    )


def _print_summary(summary: dict[str, Any]) -> None:
    metrics = summary["metrics"]
    table = Table(title=f"held-out speakers ({summary['test_windows']} windows)")
    for column in ("artifact", "accuracy", "macro-F1", "p50 µs", "p99 µs", "windows/s"):
        table.add_column(column, justify="right")
    for artifact, prefix in (("fp32", ""), ("int8", "int8_"), ("fp16", "fp16_")):
        if f"{prefix}accuracy" not in metrics:
            continue
        table.add_row(
            artifact,
            f"{metrics[f'{prefix}accuracy']:.4f}",
            f"{metrics[f'{prefix}macro_f1']:.4f}",
            f"{metrics.get(f'{prefix}latency_us_p50', float('nan')):.0f}",
            f"{metrics.get(f'{prefix}latency_us_p99', float('nan')):.0f}",
            f"{metrics.get(f'{prefix}windows_per_s', float('nan')):.0f}",
        )
    _out.print(table)
    _out.print(
        f"bundle: {summary['bundle']}  (trained in {summary['train_seconds']} s, "
        f"total {summary['total_seconds']} s)"
    )
