"""`sonolake gateway` and `sonolake replay`: serve live audio, and stream recordings into it.

``gateway`` is the composition root of the streaming area: it builds the settings, the spool
writer, the serving engine (following the registry's ``champion`` alias; empty when there is
none, and the gateway says so) and the gateway, and stops them gracefully on SIGTERM/SIGINT:
sessions are flushed and ended, then the spool writer seals its segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import Settings, get_settings

log = logging.getLogger("sonolake.gateway")


def gateway_config(settings: Settings, host: str | None = None, port: int | None = None) -> Any:
    """The gateway's limits and timings from the settings (flags win)."""
    from streaming.gateway.server import GatewayConfig

    metrics_token = settings.gateway_metrics_token
    return GatewayConfig(
        host=host or settings.gateway_host,
        port=settings.gateway_port if port is None else port,
        auth_tokens=tuple(settings.auth_tokens),
        allow_anonymous_loopback=settings.allow_anonymous_loopback,
        allowed_origins=tuple(settings.gateway_allowed_origins),
        max_sessions=settings.gateway_max_sessions,
        max_sessions_per_credential=settings.gateway_max_sessions_per_credential,
        max_spool_queue_bytes=settings.gateway_max_spool_queue_bytes,
        rate_audio_s_per_s=settings.gateway_rate_audio_s_per_s,
        rate_burst_audio_s=settings.gateway_rate_burst_audio_s,
        metrics_token=metrics_token.get_secret_value() if metrics_token else None,
        certfile=str(settings.gateway_certfile) if settings.gateway_certfile else None,
        keyfile=str(settings.gateway_keyfile) if settings.gateway_keyfile else None,
        max_frame_bytes=settings.gateway_max_frame_bytes,
        idle_timeout_s=settings.gateway_idle_timeout_s,
        max_pending_ms=settings.gateway_max_pending_ms,
        interim_interval_ms=settings.gateway_interim_interval_ms,
        resume_window_s=settings.gateway_resume_window_s,
        shadow_windows_per_s=settings.gateway_shadow_windows_per_s,
        shadow_queue=settings.gateway_shadow_queue,
        held_versions=settings.gateway_held_versions,
    )


def serving_engine(settings: Settings) -> Any:
    """The engine following the champion alias (or the remote endpoint's client when
    ``SONOLAKE_INFERENCE_URL`` is set), or None when serving cannot start at all."""
    try:
        from sonolake import wiring

        return wiring.gateway_classifier(settings)
    except Exception as exc:  # no registry yet, or serving unavailable: run without a model
        log.warning("no serving engine (%s); the gateway runs VAD and segmentation only", exc)
        return None


async def open_engine_until_stopped(settings: Settings, stop: asyncio.Event) -> Any:
    """:func:`serving_engine`, tried again every ``SONOLAKE_SERVING_POLL_INTERVAL_S`` until it
    opens or the gateway stops: a registry that cannot be opened yet (a tracking server still
    starting, a database not reachable) must not leave a worker without a model for the rest
    of its life. (A fresh SQLite store is created whole and linked into place, so the workers
    of one gateway opening it at the same moment cannot leave it half-migrated:
    ``models.registry.create_sqlite_store``.)"""
    while not stop.is_set():
        engine = await asyncio.to_thread(serving_engine, settings)
        if engine is not None:
            return engine
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.serving_poll_interval_s)
    return None


WORKER_BOARD_DIR = "gateway-workers"
"""``<spool>/gateway-workers/``: the workers' shared health and metrics snapshots."""


def wiring_challenger(settings: Settings) -> Any:
    """The engine following the ``challenger`` alias, or None when it cannot be opened."""
    try:
        from sonolake import wiring

        return wiring.serving_engine(settings, alias="challenger")
    except Exception as exc:
        log.warning("no challenger engine (%s); shadow scoring is off", exc)
        return None


def version_loader(settings: Settings) -> Any:
    """What loads a registered version a session names (``model=<version>``), not followed."""
    from sonolake import wiring

    return functools.partial(wiring.version_engine, settings)


def hold_models(gateway: Any, champion: Any, challenger: Any) -> None:
    """Give the gateway the challenger and export both engines' series on its ``/metrics``."""
    from models.serving_metrics import EngineCollector

    gateway.set_challenger(challenger)
    engines = {"champion": champion, **({"challenger": challenger} if challenger else {})}
    gateway.metrics.registry.register(EngineCollector(engines))


def worker_count(settings: Settings, workers: int | None) -> int:
    """Worker processes to run: the flag, else the setting; 0 means one per CPU core."""
    wanted = settings.gateway_workers if workers is None else workers
    if wanted < 0:
        raise BadInput(f"--workers {wanted}: use 1 or more (0: one per CPU core)")
    return wanted or os.cpu_count() or 1


async def run_gateway(
    settings: Settings, host: str | None, port: int | None, worker: int | None = None
) -> None:
    """Listen first, then load the model in the background (sessions say whether one is).

    ``worker`` K (under :func:`run_workers`): spool in ``<spool>/worker-K/``, the port shared
    with ``SO_REUSEPORT``, health and metrics published for the other workers.
    """
    from streaming.gateway.registry import REGISTRY_FILE
    from streaming.gateway.server import Gateway
    from streaming.gateway.workers import WorkerBoard
    from streaming.spool import SpoolLocked, SpoolWriter, worker_spool_dir

    config = dataclasses.replace(
        gateway_config(settings, host, port),
        worker=worker,
        registry_path=str(settings.spool_path / REGISTRY_FILE),
    )
    spool_dir = (
        settings.spool_path if worker is None else worker_spool_dir(settings.spool_path, worker)
    )
    board = None if worker is None else WorkerBoard(settings.spool_path / WORKER_BOARD_DIR, worker)
    spool = SpoolWriter(spool_dir, commit_interval_ms=settings.gateway_spool_commit_ms)
    try:
        await spool.start()
    except SpoolLocked as exc:
        raise BadInput(str(exc)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, spool=spool, board=board)
    console = Console(stderr=True)
    engine = None
    try:
        try:
            await gateway.start()
        except ssl.SSLError as exc:
            raise BadInput(f"cannot use the TLS certificate or key: {exc}") from None
        except OSError as exc:
            raise WorkFailed(f"cannot listen on {config.host}:{config.port}: {exc}") from None
        scheme = "https" if gateway.tls else "http"
        console.print(
            f"gateway {'' if worker is None else f'worker {worker} '}on "
            f"{scheme}://{config.host}:{gateway.port}/ (WebSocket /v1/listen), spool {spool_dir}"
        )
        if not settings.gateway_serve_model:
            console.print("model serving is off: VAD and segmentation only")
            await stop.wait()
            return
        loader = asyncio.create_task(open_engine_until_stopped(settings, stop))
        await asyncio.wait(
            [loader, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED"
        )
        if loader.done():
            engine = loader.result()
            gateway.set_engine(engine)
            if engine is not None and settings.inference_url:
                from models.remote_engine import RemoteCollector

                gateway.metrics.registry.register(RemoteCollector(engine))  # misses on /metrics
            if engine is not None and not settings.inference_url:
                challenger = await asyncio.to_thread(wiring_challenger, settings)
                hold_models(gateway, engine, challenger)
                gateway.set_version_loader(version_loader(settings))
            loaded = engine is not None and engine.loaded
            console.print(
                f"classifying on {settings.inference_url} (version {engine.model_version})"
                if loaded and settings.inference_url
                else f"serving model version {engine.model_version}"
                if loaded
                else "no champion model yet: VAD and segmentation until one is promoted"
            )
        await stop.wait()
    finally:
        await gateway.stop()
        await spool.close()
        if engine is not None:
            engine.close()
        if gateway.challenger is not None:
            gateway.challenger.close()  # type: ignore[attr-defined]


def run_workers(settings: Settings, host: str | None, port: int | None, workers: int) -> None:
    """The supervisor of ``sonolake gateway --workers N`` (N > 1): hold the port, run N
    worker processes on it and restart any that dies, until SIGTERM/SIGINT."""
    import shutil
    import threading

    from streaming.gateway.workers import Supervisor, hold_port

    bind_host = host or settings.gateway_host
    try:
        holder = hold_port(bind_host, settings.gateway_port if port is None else port)
    except OSError as exc:
        raise WorkFailed(f"cannot listen on {bind_host}:{port}: {exc}") from None
    bound = int(holder.getsockname()[1])
    shutil.rmtree(settings.spool_path / WORKER_BOARD_DIR, ignore_errors=True)
    passed: list[str] = []
    for flag, value in (
        ("--certfile", settings.gateway_certfile),
        ("--keyfile", settings.gateway_keyfile),
    ):
        if value is not None:
            passed += [flag, str(value)]

    def command(worker: int) -> list[str]:
        return [
            *((sys.executable, "-m", "sonolake", "gateway")),
            *("--host", bind_host, "--port", str(bound), "--worker-index", str(worker)),
            *passed,
        ]

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Console(stderr=True).print(
        f"gateway supervisor: {workers} workers on {bind_host}:{bound} (SO_REUSEPORT), "
        f"spool {settings.spool_path}/worker-K, registry {settings.spool_path}/sessions.db"
    )
    try:
        Supervisor(workers, command).run(stop)
    finally:
        holder.close()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""

    @app.command("gateway")
    def gateway(
        host: Annotated[
            str | None, typer.Option(help="Bind address (default from settings).")
        ] = None,
        port: Annotated[int | None, typer.Option(help="Port for WebSocket and HTTP.")] = None,
        certfile: Annotated[
            Path | None,
            typer.Option(help="PEM certificate chain: serve wss:// and https:// (with --keyfile)."),
        ] = None,
        keyfile: Annotated[
            Path | None, typer.Option(help="PEM private key (if not inside --certfile).")
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                help="Worker processes on the port (default from settings; 0: one per CPU "
                "core; 1: a single process)."
            ),
        ] = None,
        worker_index: Annotated[
            int | None, typer.Option(hidden=True, help="Run as worker K of the supervisor.")
        ] = None,
    ) -> None:
        """Serve /v1/listen (WebSocket), /healthz, /metrics and the browser page."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        settings = get_settings(gateway_certfile=certfile, gateway_keyfile=keyfile)
        if worker_index is not None:
            asyncio.run(run_gateway(settings, host, port, worker=worker_index))
            return
        count = worker_count(settings, workers)
        if count == 1:
            asyncio.run(run_gateway(settings, host, port))
        else:
            run_workers(settings, host, port, count)

    @app.command("replay")
    def replay_command(
        manifest: Annotated[Path, typer.Option(help="Manifest CSV (path,label,speaker,...).")],
        streams: Annotated[int, typer.Option(help="Devices streaming at once.")] = 4,
        url: Annotated[
            str | None,
            typer.Option(help="Gateway URL (default ws://<gateway_host>:<port>/v1/listen)."),
        ] = None,
        realtime: Annotated[bool, typer.Option(help="Pace chunks at the speed of speech.")] = False,
        speed: Annotated[
            float | None,
            typer.Option(help="Pace at this multiple of real time (unpaced if unset)."),
        ] = None,
        labels: Annotated[
            bool, typer.Option(help="Send each clip's label as ground truth.")
        ] = False,
        limit: Annotated[
            int | None,
            typer.Option(
                help="Replay a seeded sample of K clips, spread over labels and speakers."
            ),
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of the --limit sample.")] = 0,
        data_root: Annotated[
            Path | None,
            typer.Option(
                help="Folder relative WAV paths resolve against (default: the manifest's "
                "grandparent, then the manifest's folder)."
            ),
        ] = None,
        token: Annotated[
            str | None, typer.Option(help="API token (default: first configured).")
        ] = None,
        encoding: Annotated[str, typer.Option(help="linear16 or mulaw.")] = "linear16",
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Also write the report as JSON here.")
        ] = None,
    ) -> None:
        """Stream WAV files as N devices would (one session per speaker) and report results."""
        from features.corpus import DataMissing
        from streaming.replay import replay

        settings = get_settings()
        if not manifest.exists():
            raise BadInput(f"manifest {manifest} not found; pass --manifest path/to/manifest.csv")
        if streams < 1:
            raise BadInput(f"--streams {streams}: use 1 or more")
        if encoding not in ("linear16", "mulaw"):
            raise BadInput(f"--encoding {encoding}: use linear16 or mulaw")
        target = url or f"ws://{settings.gateway_host}:{settings.gateway_port}/v1/listen"
        key = token or (settings.auth_tokens[0] if settings.auth_tokens else None)
        try:
            report = asyncio.run(
                replay(
                    manifest,
                    url=target,
                    streams=streams,
                    realtime=realtime,
                    speed=speed,
                    labels=labels,
                    limit=limit,
                    seed=seed,
                    token=key,
                    encoding=encoding,
                    data_root=data_root,
                )
            )
        except (ValueError, DataMissing) as exc:
            raise BadInput(str(exc)) from exc
        summary = report.as_dict()
        table = Table("replay", "value")
        for name, value in summary.items():
            table.add_row(name, str(value))
        Console().print(table)
        if json_out is not None:
            json_out.write_text(json.dumps(summary, indent=2) + "\n")
        if report.sessions == 0:
            raise WorkFailed(f"no session completed; first error: {report.errors[:1]}")
