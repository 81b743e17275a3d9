"""`sonolake demo` (= `make demo`): the whole loop end to end, with a summary.

Starts the gateway and the sidecar, replays real recordings as a fleet of devices, lands them,
trains and promotes a model through the asset graph, serves it to a second replay, provokes
drift with telephone audio and shows the sensor's retraining run. See docs/demo.md.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from sonolake.demo.options import DEMO_EPOCHS, DEMO_LIVE_SEGMENTS, DEMO_PRESET, DemoOptions
from sonolake.errors import BadInput


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""

    @app.command("demo")
    def demo(
        streams: Annotated[int, typer.Option(help="Devices streaming at once (at least 20).")] = 24,
        training_clips: Annotated[
            int | None, typer.Option(help="Replay only this many training clips (default: all).")
        ] = None,
        serving_clips: Annotated[
            int, typer.Option(help="Clips of unseen speakers replayed to the served model.")
        ] = 240,
        drift_clips: Annotated[int, typer.Option(help="Telephone-digit clips replayed.")] = 300,
        epochs: Annotated[
            int | None, typer.Option(help="Training epochs (default: the preset's own).")
        ] = DEMO_EPOCHS,
        reset: Annotated[
            bool,
            typer.Option("--reset", help="Wipe the lake and state dir first, whatever made them."),
        ] = False,
    ) -> None:
        """Run the whole loop end to end on the embedded defaults (takes a few minutes)."""
        from rich.console import Console

        from sonolake.demo.run import run_demo, summary_path
        from sonolake.demo.summary import print_summary
        from sonolake.settings import get_settings

        if streams < 20:
            raise BadInput(f"--streams {streams}: the demo streams at least 20 devices at once")
        for name, value in (("--serving-clips", serving_clips), ("--drift-clips", drift_clips)):
            if value < 40:
                raise BadInput(f"{name} {value}: use at least 40 (a drift report needs 30 events)")
        console = Console(file=sys.stdout)  # kept when dbt's echo is redirected
        live = None if "SONOLAKE_PROMOTION_MIN_LIVE_SEGMENTS" in os.environ else DEMO_LIVE_SEGMENTS
        settings = get_settings(training_preset=DEMO_PRESET, promotion_min_live_segments=live)
        options = DemoOptions(
            streams=streams,
            training_limit=training_clips,
            serving_limit=serving_clips,
            drift_limit=drift_clips,
            epochs=epochs,
            reset=reset,
        )
        try:
            summary = run_demo(settings, options, console)
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: the gateway and the sidecar were stopped")
            sys.stdout.flush()
            # a run cut short may still hold a worker thread in native code (JAX): leave now
            os._exit(130)
        print_summary(console, summary)
        console.print(f"summary written to {summary_path(settings)}")
