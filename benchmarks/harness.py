"""What every benchmark shares: the result record, machine line, percentiles, CPU clocks.

The contract: each benchmark measures our code and a baseline in the same run and reports the
ratio, medians and tails; CPU time (``getrusage``) is preferred to wall time because it does
not move when a neighbour is busy. ``ok`` says the run completed, not that a goal was met.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


@dataclass
class BenchResult:
    benchmark: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["error"] is None:
            data.pop("error")
        return data


def machine_info() -> dict[str, Any]:
    """The machine line: CPUs, GPU name (or null) and Python version."""
    gpu = None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            gpu = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
        except (OSError, subprocess.SubprocessError):
            gpu = None
    return {
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def percentiles(values: Iterable[float], *qs: float) -> dict[str, float]:
    """``{"p50": …, "p99": …}`` of the values (NaN when empty)."""
    arr = np.asarray(list(values), dtype=np.float64)
    return {f"p{q:g}": (float(np.percentile(arr, q)) if arr.size else float("nan")) for q in qs}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def cpu_timer() -> Iterator[dict[str, float]]:
    """Measure CPU and wall seconds of a block: ``with cpu_timer() as t: …; t["cpu_s"]``."""
    out: dict[str, float] = {}
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    try:
        yield out
    finally:
        out["cpu_s"] = cpu_seconds() - cpu0
        out["wall_s"] = time.perf_counter() - wall0


def progress() -> Progress:
    """The progress bar every benchmark shows while it runs (stderr, so JSON stays clean)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_summary(result: BenchResult, console: Console | None = None) -> None:
    """The human summary: one table of metrics, baseline and ratios."""
    console = console or Console()
    table = Table(title=f"benchmark: {result.benchmark}  ({'ok' if result.ok else 'FAILED'})")
    table.add_column("section")
    table.add_column("key")
    table.add_column("value", justify="right")
    for section in ("params", "metrics", "baseline", "ratios", "machine"):
        for key, value in getattr(result, section).items():
            if isinstance(value, dict):  # a breakdown: one row per part
                for part, part_value in value.items():
                    table.add_row(section, f"{key} · {part}", _fmt(part_value))
            else:
                table.add_row(section, key, _fmt(value))
    console.print(table)
    if result.error:
        console.print(f"[red]error:[/] {result.error}")


def write_json(result: BenchResult, path: Path | str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
