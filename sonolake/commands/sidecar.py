"""`sonolake sidecar`: land the gateway's spool into bronze, silver and gold Delta tables.

The composition root of the sidecar: it builds the settings, the lake and the driver (no model:
the gateway decided, the sidecar lands its decisions), then lands micro-batches until
SIGTERM/SIGINT (the batch in flight finishes first). Each phase prints one line
(``sidecar batch=N phase=P``) so operators and crash tests can follow along.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import Settings, get_settings

log = logging.getLogger("sonolake.sidecar")


def phase_printer(settings: Settings) -> Any:
    """Print each phase; kill this process at the phase named by ``sidecar_crash_at``."""
    crash_at = settings.sidecar_crash_at
    crash_phase, _, crash_batch = (crash_at or "").partition("@")

    def on_phase(phase: str, batch: int) -> None:
        sys.stdout.write(f"sidecar batch={batch} phase={phase}\n")
        sys.stdout.flush()
        if crash_at and phase == crash_phase and (not crash_batch or int(crash_batch) == batch):
            os.kill(os.getpid(), signal.SIGKILL)

    return on_phase


def dask_scheduler_for(settings: Settings) -> str | None:
    """The scheduler the sidecar submits batches to, or None for the in-process runner."""
    if settings.sidecar_runner != "dask":
        return None
    if not settings.dask_scheduler:
        raise BadInput(
            "--runner dask needs a scheduler: --dask-scheduler tcp://HOST:PORT "
            "(or SONOLAKE_DASK_SCHEDULER)"
        )
    return settings.dask_scheduler


def build_sidecar(settings: Settings, on_batch: Any | None = None) -> Any:
    from sonolake import wiring
    from streaming.sidecar.driver import Sidecar, SidecarConfig

    lake = wiring.lake(settings)
    config = SidecarConfig(
        spool_dir=settings.spool_path,
        state_dir=settings.state_path / "sidecar",
        retention_s=settings.spool_retention_s,
        max_segments_per_batch=settings.sidecar_max_segments_per_batch,
        max_batch_bytes=settings.sidecar_max_batch_bytes,
        dask_scheduler=dask_scheduler_for(settings),
        dask_partitions=settings.dask_partitions,
        store_retry_s=settings.sidecar_store_retry_s,
        pipeline_ahead=settings.sidecar_pipeline_ahead,
    )
    return Sidecar(lake, config, on_phase=phase_printer(settings), on_batch=on_batch)


def start_metrics(settings: Settings) -> Any | None:
    """The sidecar's /metrics on ``SONOLAKE_SIDECAR_METRICS_PORT`` (None when unset)."""
    if settings.sidecar_metrics_port is None:
        return None
    from streaming.sidecar.metrics import SidecarMetrics, serve

    metrics = SidecarMetrics(settings.spool_path)
    server = serve(metrics, settings.sidecar_metrics_port, settings.gateway_host)
    host, port = server.server_address[:2]
    sys.stdout.write(f"sidecar metrics on http://{host}:{port}/metrics\n")
    return metrics


def run_sidecar(
    once: Annotated[
        bool, typer.Option("--once", help="Land what is sealed now (all of it), then exit.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Seconds between spool checks when idle."),
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            "--runner",
            help="Where each micro-batch's pipeline runs: in-process (default) or dask.",
        ),
    ] = None,
    dask_scheduler: Annotated[
        str | None,
        typer.Option("--dask-scheduler", help="Dask scheduler for --runner dask: tcp://HOST:PORT."),
    ] = None,
) -> None:
    """Land sealed spool segments into bronze/silver Delta tables, exactly once."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    settings = get_settings(sidecar_runner=runner, dask_scheduler=dask_scheduler)
    interval_s = settings.sidecar_interval_s if interval is None else interval
    if interval_s <= 0:
        raise BadInput(f"--interval {interval_s} must be > 0 seconds")
    metrics = start_metrics(settings)
    sidecar = build_sidecar(settings, on_batch=metrics.observe if metrics is not None else None)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sys.stdout.write("sidecar ready\n")
    sys.stdout.flush()
    try:
        if once:
            land_all(sidecar, stop)
        else:
            sidecar.run(interval_s, stop)
    except OSError as exc:
        from lake_schemas.delta import is_store_unavailable

        if not is_store_unavailable(exc):
            raise
        first_line = str(exc).splitlines()[0]
        raise WorkFailed(
            f"batch not landed: the lake's object store stayed unavailable for "
            f"{settings.sidecar_store_retry_s:g} s ({first_line}); the next start replays it"
        ) from None


def land_all(sidecar: Any, stop: threading.Event) -> None:
    """``--once``: land every sealed segment, printing each batch's report as one JSON line."""
    from streaming.sidecar.options import ClusterUnavailable

    while not stop.is_set():
        try:
            report = sidecar.land_next()
        except ClusterUnavailable as exc:  # the batch stays planned: the next start lands it
            raise WorkFailed(f"batch not landed: {exc}") from None
        if report is None:
            break
        sys.stdout.write(json.dumps(dataclasses.asdict(report)) + "\n")
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("sidecar")(run_sidecar)
