"""What the demo reports at the end: on the terminal and as ``demo-summary.json`` in the lake."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class DemoSummary:
    """Every number the demo shows, and where to look next."""

    data: str = "real recordings"
    devices: int = 0
    sessions: int = 0
    chunks_landed: int = 0
    events: int = 0
    training_windows: int = 0
    heldout_windows: int = 0
    first_model_version: str | None = None
    heldout_accuracy: float | None = None
    """INT8 (the CPU-served artifact) on speakers the model never heard."""
    heldout_macro_f1: float | None = None
    gate_passed: bool | None = None
    model_version_served: str | None = None
    """The version the gateway's results carried during the second replay."""
    live_accuracy: float | None = None
    """Final results matching the clients' labels during the second replay."""
    client_latency_ms_p50: float | None = None
    client_latency_ms_p99: float | None = None
    dropped_chunks: int = 0
    drift_share_before: float | None = None
    drift_detected_before: bool | None = None
    drift_share: float | None = None
    drift_detected: bool | None = None
    drift_report_html: str | None = None
    retraining_run_id: str | None = None
    retraining_trigger: str | None = None
    retrained_model_version: str | None = None
    retrained_gate_passed: bool | None = None
    retrained_accuracy: float | None = None
    shadow_segments: int | None = None
    """Segments the retrained version shadow-scored next to the champion on the third replay."""
    shadow_agreement: float | None = None
    shadow_labelled_segments: int | None = None
    shadow_live_accuracy: float | None = None
    """The retrained version's accuracy on those labelled live segments."""
    shadow_champion_live_accuracy: float | None = None
    """The champion's, on the same segments."""
    champion_after: str | None = None
    model_version_served_after: str | None = None
    """The version the gateway hot-swapped to after the retraining (None: it kept the first)."""
    dbt_build_passed: bool | None = None
    quality_checks_passed: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    where_to_look: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")
        return path


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def print_summary(console: Console, summary: DemoSummary) -> None:
    table = Table(title="Sonolake demo", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("audio", summary.data),
        ("devices / sessions", f"{summary.devices} / {summary.sessions}"),
        ("chunks landed in bronze", summary.chunks_landed),
        ("events in silver", summary.events),
        ("training / held-out windows", f"{summary.training_windows} / {summary.heldout_windows}"),
        ("held-out accuracy (INT8, unseen speakers)", summary.heldout_accuracy),
        ("held-out macro-F1", summary.heldout_macro_f1),
        ("promotion gate", summary.gate_passed),
        ("model version served", summary.model_version_served),
        ("live accuracy (2nd replay)", summary.live_accuracy),
        (
            "client latency p50 / p99 (ms)",
            f"{_fmt(summary.client_latency_ms_p50)} / {_fmt(summary.client_latency_ms_p99)}",
        ),
        (
            "drift on unseen speakers (share)",
            f"{_fmt(summary.drift_detected_before)} ({_fmt(summary.drift_share_before)})",
        ),
        (
            "drift on telephone digits (share)",
            f"{_fmt(summary.drift_detected)} ({_fmt(summary.drift_share)})",
        ),
        (
            "retraining run (trigger)",
            f"{_fmt(summary.retraining_run_id)} ({_fmt(summary.retraining_trigger)})",
        ),
        (
            "retrained version / gate",
            f"{_fmt(summary.retrained_model_version)} / {_fmt(summary.retrained_gate_passed)}",
        ),
        (
            "shadow: segments / agreement",
            f"{_fmt(summary.shadow_segments)} / {_fmt(summary.shadow_agreement)}",
        ),
        (
            "shadow live accuracy: retrained vs champion",
            f"{_fmt(summary.shadow_live_accuracy)} vs {_fmt(summary.shadow_champion_live_accuracy)}"
            f" ({_fmt(summary.shadow_labelled_segments)} labelled)",
        ),
        (
            "champion now / gateway serves",
            f"{_fmt(summary.champion_after)} / "
            f"{_fmt(summary.model_version_served_after or summary.model_version_served)}",
        ),
        ("dbt build", summary.dbt_build_passed),
        ("lake quality checks passed", summary.quality_checks_passed),
        ("total time (s)", summary.total_seconds),
    ]
    for name, value in rows:
        table.add_row(name, _fmt(value))
    console.print(table)
    where = Table(title="Where to look", show_header=False, title_justify="left")
    where.add_column("what", style="bold")
    where.add_column("command / path")
    for name, value in summary.where_to_look.items():
        where.add_row(name, value)
    console.print(where)
