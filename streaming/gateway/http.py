"""Plain HTTP on the gateway's port: ``/healthz``, ``/metrics`` and the browser page.

The ``websockets`` server parses every request; its ``process_request`` hook answers the
non-WebSocket routes here and lets ``/v1/listen`` through to the WebSocket handshake. Static
files come from a fixed table (never from a path the client names), so no request can read a
file outside ``streaming/gateway/web/``.
"""

from __future__ import annotations

import http
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streaming.gateway.assemblyai import ASSEMBLYAI_PATH
from streaming.gateway.metrics import METRICS_CONTENT_TYPE
from streaming.gateway.protocol import LISTEN_PATH

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/pcm-worklet.js": ("pcm-worklet.js", "text/javascript; charset=utf-8"),
}


@lru_cache(maxsize=len(STATIC_FILES))
def _static_body(name: str) -> bytes:
    return (WEB_DIR / name).read_bytes()


def response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def json_response(status: http.HTTPStatus, payload: dict[str, Any]) -> Response:
    return response(status, json.dumps(payload).encode(), "application/json")


def make_process_request(
    health: Callable[[], dict[str, Any]], metrics: Callable[[], bytes]
) -> Callable[[ServerConnection, Request], Response | None]:
    """The ``process_request`` hook: answer HTTP routes, pass ``/v1/listen`` and AssemblyAI's
    ``/v3/ws`` on (None)."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in (LISTEN_PATH, ASSEMBLYAI_PATH):
            return None
        if path == "/healthz":
            return json_response(http.HTTPStatus.OK, health())
        if path == "/metrics":
            return response(http.HTTPStatus.OK, metrics(), METRICS_CONTENT_TYPE)
        static = STATIC_FILES.get(path)
        if static is not None:
            name, content_type = static
            return response(http.HTTPStatus.OK, _static_body(name), content_type)
        return response(
            http.HTTPStatus.NOT_FOUND,
            b"not found: use /v1/listen (WebSocket), /healthz, /metrics or /\n",
            "text/plain; charset=utf-8",
        )

    return process_request
