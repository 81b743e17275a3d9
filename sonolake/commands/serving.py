"""`sonolake serve`: the registered model over the Open Inference Protocol (KServe v2).

Binds HTTP and gRPC on the settings' host and ports (flags win), loads the versions the
registry's aliases name, prints where it listens and serves until SIGTERM/SIGINT, then lets
requests in flight finish (uvicorn's and gRPC's grace periods) and closes the engines.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer
from rich.console import Console

from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import Settings, get_settings


async def run_endpoint(
    settings: Settings, host: str | None, http_port: int | None, grpc_port: int | None
) -> None:
    from sonolake import wiring

    server = wiring.inference_endpoint(
        settings, host=host, http_port=http_port, grpc_port=grpc_port
    )
    try:
        await server.start()
    except OSError as exc:
        server.model.versions.close()
        raise WorkFailed(f"cannot listen on {server.host}: {exc}") from None
    versions = server.model.versions
    Console(stderr=True).print(
        f"endpoint http://{server.host}:{server.http_port}/v2 (HTTP) and "
        f"{server.host}:{server.grpc_port} (gRPC): model {server.model.name!r}, "
        f"versions {versions.loaded_versions()}, aliases {versions.aliases}"
        + ("" if versions.champion else "; no champion yet: promote one with `sonolake promote`"),
        soft_wrap=True,
    )
    await server.serve()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""

    @app.command("serve")
    def serve(
        host: Annotated[
            str | None, typer.Option(help="Bind address (default SONOLAKE_SERVE_HOST).")
        ] = None,
        http_port: Annotated[
            int | None, typer.Option(help="HTTP/REST port (default SONOLAKE_SERVE_HTTP_PORT).")
        ] = None,
        grpc_port: Annotated[
            int | None, typer.Option(help="gRPC port (default SONOLAKE_SERVE_GRPC_PORT).")
        ] = None,
    ) -> None:
        """Serve the registered model over the Open Inference Protocol (KServe v2): HTTP, gRPC."""
        from sonolake import wiring

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        settings = get_settings()
        for flag, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
            if port is not None and not 0 <= port <= 65535:
                raise BadInput(f"{flag} {port}: use 0–65535 (0 picks a free port)")
        if not wiring.registry_exists(settings):
            raise BadInput(
                f"no model registry at {settings.mlflow_tracking_uri}; train and promote a model "
                "first (`sonolake train`, `sonolake promote`) or set SONOLAKE_MLFLOW_URI"
            )
        asyncio.run(run_endpoint(settings, host, http_port, grpc_port))
