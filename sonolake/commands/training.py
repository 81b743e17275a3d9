"""``sonolake train``: train on the real recordings, export, evaluate, register a ``challenger``.

The work is :func:`models.candidate.train_candidate`, the pipeline the Dagster ``candidate_model``
asset runs too: the version lands in the registry as ``challenger`` with the same params,
metrics, learning curves, evaluation table and INT8 confusion matrix, so ``sonolake promote``
can move it through the gate next. The held-out side is fixed (20 % of speakers, split seed 0)
and named as ``sonolake evaluate`` and the gate name it, so the accuracy printed here is the
one they see. ``--seed`` changes the training run (initialisation, augmentation), never the
split.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sonolake.errors import BadInput, WorkFailed

if TYPE_CHECKING:
    from sonolake.settings import Settings

_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""

    @app.command("train")
    def train_command(
        preset: Annotated[
            str,
            typer.Option(
                "--preset",
                help="embedding (pretrained speech embeddings + a linear layer, the default), "
                "full (the CNN from scratch) or quick (a small CNN, seconds).",
            ),
        ] = "embedding",
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
        """Train the keyword classifier on the real recordings and register it as challenger."""
        from sonolake import wiring
        from sonolake.settings import get_settings

        settings = get_settings(data_dir=data_dir)
        bundle_dir = (out or wiring.bundle_dir(settings, preset)).expanduser().resolve()
        summary = run_training(
            settings, bundle_dir, preset, epochs=epochs, seed=seed, ensemble=ensemble
        )
        _print_summary(summary)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(summary, indent=2) + "\n")


def run_training(
    settings: Settings,
    bundle_dir: Path,
    preset_name: str,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    ensemble: int | None = None,
) -> dict[str, Any]:
    """Load → split by speaker → the training pipeline; returns the summary."""
    from features.corpus import SPEECH_COMMANDS, DataMissing, corpus_manifest
    from models.candidate import train_candidate
    from models.dataset import corpus_split
    from models.evaluation import LIGHT_PROBE, SpeedProbe
    from models.training import EpochReport, preset
    from sonolake import wiring

    try:
        config = preset(preset_name, epochs=epochs, seed=seed, ensemble=ensemble)
        manifest = corpus_manifest(settings.data_dir, SPEECH_COMMANDS)
    except (ValueError, DataMissing) as exc:
        raise BadInput(str(exc)) from exc
    started = time.perf_counter()
    registry = wiring.registry(settings)
    with _progress() as progress:
        loading = progress.add_task("load recordings", total=1)
        split = corpus_split(manifest)
        progress.update(loading, completed=1)
        training = progress.add_task(
            f"train {preset_name} ({len(split.train)} windows)",
            total=config.epochs * config.ensemble,
        )
        stages: dict[str, Any] = {}

        def on_epoch(report: EpochReport) -> None:
            progress.update(
                training,
                advance=1,
                description=f"train member {report.member + 1}/{config.ensemble} "
                f"epoch {report.epoch}/{report.epochs} loss {report.loss:.3f}",
            )

        def on_stage(name: str) -> None:
            for task in stages.values():
                progress.update(task, completed=1)
            stages[name] = progress.add_task(STAGE_TITLES[name], total=1)

        try:
            candidate = train_candidate(
                split.train,
                split.heldout,
                preset_name=preset_name,
                config=config,
                bundle_dir=bundle_dir,
                registry=registry,
                speed=LIGHT_PROBE if preset_name == "quick" else SpeedProbe(),
                params={"data": str(manifest)},
                run_name=f"recordings-{preset_name}",
                on_epoch=on_epoch,
                on_stage=on_stage,
            )
        except (OSError, RuntimeError, ValueError) as exc:  # an artifact that does not load
            raise WorkFailed(f"training into {bundle_dir} failed: {exc}") from exc
        for task in stages.values():
            progress.update(task, completed=1)
    fp32 = candidate.reports["fp32"]
    labels = split.heldout.labels
    return {
        "bundle": str(bundle_dir),
        "model_version": candidate.version,
        "preset": preset_name,
        **split.describe(),
        "train_seconds": round(candidate.train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "metrics": candidate.metrics,
        "per_class_f1": fp32.per_class_f1,
        "chance_accuracy": Counter(labels).most_common(1)[0][1] / len(labels),
        "heldout_dataset": split.heldout.name,
    }


STAGE_TITLES = {
    "export": "export ONNX fp32/int8/fp16",
    "evaluate": "evaluate held-out speakers",
    "register": "register in MLflow as challenger",
}


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
        f"version {summary['model_version']} registered as challenger; bundle: "
        f"{summary['bundle']}  (trained in {summary['train_seconds']} s, "
        f"total {summary['total_seconds']} s)"
    )
