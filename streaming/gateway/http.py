"""Plain HTTP on the gateway's port: ``/healthz``, ``/metrics`` and the browser page.

The ``websockets`` server parses every request; its ``process_request`` hook answers the
non-WebSocket routes here and lets ``/v1/listen`` through to the WebSocket handshake. Static
files come from a fixed table (never from a path the client names), so no request can read a
file outside ``streaming/gateway/web/``. Only ``GET`` and ``HEAD`` are served (anything else
is ``405``), and ``/metrics`` can be put behind a bearer token (``401`` without it).
"""

from __future__ import annotations

import hashlib
import hmac
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


ALLOWED_METHODS = ("GET", "HEAD")


def response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    extra: tuple[tuple[str, str], ...] = (),
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
            *extra,
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _text(status: http.HTTPStatus, text: str, *extra: tuple[str, str]) -> Response:
    return response(status, text.encode(), "text/plain; charset=utf-8", extra)


def _bearer_ok(header: str | None, expected: bytes) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>`` against a token's digest."""
    scheme, _, token = (header or "").strip().partition(" ")
    presented = hashlib.sha256(token.strip().encode()).digest()
    return hmac.compare_digest(presented, expected) and scheme.lower() == "bearer"


def json_response(status: http.HTTPStatus, payload: dict[str, Any]) -> Response:
    return response(status, json.dumps(payload).encode(), "application/json")


def make_process_request(
    health: Callable[[], dict[str, Any]],
    metrics: Callable[[], bytes],
    *,
    metrics_token: str | None = None,
) -> Callable[[ServerConnection, Request], Response | None]:
    """The ``process_request`` hook: answer HTTP routes, pass ``/v1/listen`` and AssemblyAI's
    ``/v3/ws`` on (None)."""
    metrics_digest = hashlib.sha256(metrics_token.encode()).digest() if metrics_token else None

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        answer = route(request)
        if request.method == "HEAD" and answer is not None:
            answer = Response(answer.status_code, answer.reason_phrase, answer.headers, b"")
        return answer

    def route(request: Request) -> Response | None:
        if request.method not in ALLOWED_METHODS:
            return _text(
                http.HTTPStatus.METHOD_NOT_ALLOWED,
                f"method {request.method[:16]} is not allowed; use GET or HEAD\n",
                ("Allow", ", ".join(ALLOWED_METHODS)),
            )
        path = urlsplit(request.path).path
        if path in (LISTEN_PATH, ASSEMBLYAI_PATH):
            return None
        if path == "/healthz":
            return json_response(http.HTTPStatus.OK, health())
        if path == "/metrics":
            if metrics_digest is not None and not _bearer_ok(
                request.headers.get("Authorization"), metrics_digest
            ):
                return _text(
                    http.HTTPStatus.UNAUTHORIZED,
                    "/metrics needs 'Authorization: Bearer <SONOLAKE_GATEWAY_METRICS_TOKEN>'\n",
                    ("WWW-Authenticate", 'Bearer realm="metrics"'),
                )
            return response(http.HTTPStatus.OK, metrics(), METRICS_CONTENT_TYPE)
        static = STATIC_FILES.get(path)
        if static is not None:
            name, content_type = static
            return response(http.HTTPStatus.OK, _static_body(name), content_type)
        return _text(
            http.HTTPStatus.NOT_FOUND,
            "not found: use /v1/listen (WebSocket), /healthz, /metrics or /\n",
        )

    return process_request
