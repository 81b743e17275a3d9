"""`sonolake evaluate`, `promote`, `rollback` and `models`: the data scientist's model lifecycle.

All four talk to the MLflow registry named by the settings (``SONOLAKE_MLFLOW_URI``, default a
SQLite store under the state folder) and record what they did in the lake's
``monitoring.model_evaluations`` table. Heavy imports (MLflow, ONNX Runtime) happen inside the
commands, so ``sonolake --help`` stays fast.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import Settings, get_settings

if TYPE_CHECKING:
    from models.dataset import HeldoutSet
    from models.evaluation import EvaluationReport
    from models.registry import Registry

_out = Console()
_err = Console(stderr=True)


KEY_METRICS = {
    "accuracy": "acc.",
    "macro_f1": "F1",
    "int8_accuracy": "INT8 acc.",
    "int8_macro_f1": "INT8 F1",
}
"""Run metrics `sonolake models` shows when a version has them (the names training logs)."""


class Artifact(StrEnum):
    fp32 = "fp32"
    int8 = "int8"
    fp16 = "fp16"


def _registry(settings: Settings) -> Registry:
    from sonolake import wiring

    return wiring.registry(settings)


def _heldout(manifest: Path | None, settings: Settings, all_clips: bool) -> HeldoutSet:
    from features.corpus import SPEECH_COMMANDS, DataMissing, corpus_manifest
    from models.dataset import heldout_from_manifest

    try:
        path = manifest or corpus_manifest(settings.data_dir, SPEECH_COMMANDS)
        if not path.exists():
            raise DataMissing(f"manifest {path} not found")
        with _err.status(f"loading {path} …"):
            return heldout_from_manifest(path, heldout_only=not all_clips)
    except DataMissing as exc:
        raise BadInput(f"{exc}; pass --manifest with a CSV of path,label[,speaker]") from None
    except (KeyError, ValueError) as exc:
        raise BadInput(f"cannot use manifest {manifest}: {exc}") from None


def _score_table(title: str, scores: dict[str, EvaluationReport]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in scores:
        table.add_column(name, justify="right")

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows: list[tuple[str, list[str]]] = [
        ("accuracy", [fmt(s.accuracy, ".4f") for s in scores.values()]),
        ("macro-F1", [fmt(s.macro_f1, ".4f") for s in scores.values()]),
        ("latency p50 (CPU µs, batch 1)", [fmt(s.latency_us_p50, ".0f") for s in scores.values()]),
        ("latency p99 (CPU µs, batch 1)", [fmt(s.latency_us_p99, ".0f") for s in scores.values()]),
        ("windows per CPU-s (batch 64)", [fmt(s.windows_per_s, ",.0f") for s in scores.values()]),
        ("windows scored", [str(s.n_windows) for s in scores.values()]),
    ]
    for name, values in rows:
        table.add_row(name, *values)
    return table


def evaluate(
    manifest: Annotated[
        Path,
        typer.Option("--manifest", help="Labelled audio: CSV with path,label[,speaker][,split]."),
    ],
    model: Annotated[
        str, typer.Option("--model", help="champion | challenger | VERSION | PATH to a bundle.")
    ] = "champion",
    artifact: Annotated[
        Artifact, typer.Option("--artifact", help="Which ONNX artifact to score (on the CPU).")
    ] = Artifact.int8,
    all_clips: Annotated[
        bool,
        typer.Option(
            "--all-clips",
            help="Score every clip; default: only held-out speakers (or split=test rows).",
        ),
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
) -> None:
    """Score any model on any labelled audio set: accuracy, macro-F1, per-class F1, latency."""
    from models.bundle import BundleInvalid
    from models.evaluation import evaluate as evaluate_model
    from models.onnx_session import IncompatibleModel
    from models.registry import UnknownModel

    if not manifest.exists():
        raise BadInput(f"manifest {manifest} not found; pass a CSV with path,label[,speaker]")
    settings = get_settings()
    registry = _registry(settings)
    try:
        resolved = registry.resolve(model)
    except UnknownModel as exc:
        raise BadInput(str(exc)) from None
    heldout = _heldout(manifest, settings, all_clips)
    try:
        with _err.status(f"scoring {model} ({artifact.value}) on {len(heldout.labels)} windows …"):
            score = evaluate_model(
                resolved.bundle_dir, heldout, artifact.value, model_version=resolved.version
            )
    except (BundleInvalid, IncompatibleModel) as exc:
        raise BadInput(f"model {model!r} cannot be scored: {exc}") from None
    version = resolved.version or score.model_version or "-"
    registry.record(score.record(version, "evaluate"))

    _out.print(f"model {registry.model_name} version [bold]{version}[/] ({model}), {heldout.name}")
    _out.print(_score_table("evaluation", {artifact.value: score}))
    per_class = Table("label", "F1", title="per-class F1")
    for label, f1 in score.per_class_f1.items():
        per_class.add_row(label, f"{f1:.4f}")
    _out.print(per_class)
    if json_path is not None:
        payload = {
            "model_name": registry.model_name,
            "model_version": version,
            "model": model,
            "artifact": artifact.value,
            "dataset": heldout.name,
            "windows": score.n_windows,
            "accuracy": score.accuracy,
            "macro_f1": score.macro_f1,
            "per_class_f1": score.per_class_f1,
            "latency_us_p50": score.latency_us_p50,
            "latency_us_p99": score.latency_us_p99,
            "windows_per_s": score.windows_per_s,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2))


def promote(
    version: Annotated[
        str | None, typer.Option("--version", help="Version to promote (default: the challenger).")
    ] = None,
    budget_us: Annotated[
        float | None,
        typer.Option("--budget-us", help="Max batch-1 p99 latency (µs) of the CPU INT8 model."),
    ] = None,
    min_improvement: Annotated[
        float | None,
        typer.Option("--min-improvement", help="Accuracy gain needed over the champion (0..1)."),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="Held-out set (default: the real recordings' held-out speakers)."
        ),
    ] = None,
    all_clips: Annotated[
        bool,
        typer.Option(
            "--all-clips", help="Use every clip of --manifest, not only held-out speakers."
        ),
    ] = False,
) -> None:
    """Move the `champion` alias to a version if it passes the gate (exit 1 when refused)."""
    from models.promotion import GatePolicy, PromotionGate
    from models.registry import UnknownModel

    settings = get_settings()
    registry = _registry(settings)
    policy = GatePolicy(
        latency_budget_us=budget_us
        if budget_us is not None
        else settings.promotion_latency_budget_us,
        min_improvement=min_improvement
        if min_improvement is not None
        else settings.promotion_min_improvement,
        accuracy_floor=settings.promotion_accuracy_floor,
        min_live_segments=settings.promotion_min_live_segments,
        max_live_accuracy_loss=settings.promotion_max_live_accuracy_loss,
    )
    gate = PromotionGate.on_lake(_heldout(manifest, settings, all_clips), policy, registry.lake)
    try:
        with _err.status("scoring candidate and champion on the held-out set …"):
            decision = registry.promote(version, gate)
    except UnknownModel as exc:
        raise BadInput(str(exc)) from None
    scores = {f"candidate v{decision.candidate_version}": decision.candidate}
    if decision.champion is not None:
        scores[f"champion v{decision.champion_before}"] = decision.champion
    _out.print(_score_table(f"promotion gate on {decision.dataset}", scores))
    for reason in decision.reasons:
        _out.print(f"  • {reason}")
    if not decision.passed:
        raise WorkFailed(
            f"version {decision.candidate_version} was not promoted: {decision.reason}"
        )
    _out.print(
        f"[bold green]promoted[/] version {decision.candidate_version} to champion"
        + (f" (previous: {decision.champion_before})" if decision.champion_before else "")
    )


def rollback() -> None:
    """Put the previous champion back (each rollback goes one promotion further back)."""
    from models.registry import NoChampion

    registry = _registry(get_settings())
    try:
        rolled_back, restored = registry.rollback()
    except NoChampion as exc:
        raise BadInput(f"{exc}; see `sonolake models`") from None
    _out.print(f"champion is version [bold]{restored}[/] again (was {rolled_back})")


def list_models(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Registered versions with their aliases and key metrics."""
    registry = _registry(get_settings())
    versions = registry.versions()
    if json_out:
        rows: list[dict[str, Any]] = [
            {
                "version": v.version,
                "aliases": list(v.aliases),
                "created_at": v.created_at.isoformat(),
                "feature_version": v.feature_version,
                "metrics": v.metrics,
            }
            for v in versions
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not versions:
        _out.print(f"no versions of {registry.model_name!r} yet: train one (`sonolake train`)")
        return
    keys = [k for k in KEY_METRICS if any(k in v.metrics for v in versions)]
    table = Table(title=registry.model_name)
    for name in ("version", "aliases", "created (UTC)"):
        table.add_column(name, no_wrap=True)
    for key in keys:
        table.add_column(KEY_METRICS[key], justify="right")
    for v in versions:
        table.add_row(
            v.version,
            "\n".join(v.aliases),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            *(f"{v.metrics[k]:.3f}" if k in v.metrics else "-" for k in keys),
        )
    _out.print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("evaluate")(evaluate)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("models")(list_models)
