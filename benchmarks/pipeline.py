"""The whole loop, timed: ``sonolake demo`` in a temporary lake, seconds per stage.

Ingest (replay + landing) → asset graph (features, training, export, evaluation, gate,
promotion) → serving (a second replay at real-time pace) → drift → the sensor's retraining →
analytics. There is no baseline to run beside it (it is the product end to end); the figures to
watch are the stage seconds, the held-out accuracy and which model version served.

``--quick`` replays 800 training clips and trains 4 epochs, with the gate's accuracy floor at 0
(such a model is about timing, not quality): it checks the loop works and how the stages scale,
in about two minutes (the two trainings cannot fit in the usual minute).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from benchmarks.harness import BenchResult
from sonolake.demo.options import DemoOptions
from sonolake.demo.run import run_demo
from sonolake.settings import get_settings


def run(quick: bool) -> BenchResult:
    options = (
        DemoOptions(training_limit=800, serving_limit=60, drift_limit=60, epochs=4)
        if quick
        else DemoOptions()
    )
    with tempfile.TemporaryDirectory(prefix="sonolake-pipeline-") as tmp:
        settings = get_settings(
            state_dir=Path(tmp) / "state",
            lake_uri=str(Path(tmp) / "lakehouse"),
            training_preset="quick",
            environment="local",
            # a 4-epoch model on 800 clips is about timing, not quality: let it be served
            promotion_accuracy_floor=0.0 if quick else None,
        )
        summary = run_demo(settings, options, Console(stderr=True, quiet=True))
    metrics: dict[str, object] = {
        f"seconds_{stage}": seconds for stage, seconds in summary.stage_seconds.items()
    }
    metrics |= {
        "seconds": summary.total_seconds,
        "accuracy": summary.heldout_accuracy,
        "live_accuracy": summary.live_accuracy,
        "model_version": summary.model_version_served,
        "model_version_after_retraining": summary.model_version_served_after,
        "client_latency_ms_p50": summary.client_latency_ms_p50,
        "client_latency_ms_p99": summary.client_latency_ms_p99,
        "chunks_landed": summary.chunks_landed,
        "events": summary.events,
        "drift_share": summary.drift_share,
        "drift_detected": summary.drift_detected,
        "retrained_accuracy": summary.retrained_accuracy,
        "retrained_gate_passed": summary.retrained_gate_passed,
    }
    params = {
        "streams": options.streams,
        "training_clips": options.training_limit or "all",
        "serving_clips": options.serving_limit,
        "drift_clips": options.drift_limit,
        "epochs": options.epochs,
        "data": summary.data,
    }
    ok = bool(summary.gate_passed and summary.dbt_build_passed)
    return BenchResult(benchmark="pipeline", params=params, metrics=metrics, ok=ok)
