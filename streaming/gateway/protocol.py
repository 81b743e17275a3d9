"""The ``/v1/listen`` wire protocol: query parameters, message shapes and close codes.

Conventions follow the live speech APIs users already know (Deepgram, AssemblyAI): audio goes
up as raw binary frames, control messages as small JSON text frames with a ``type`` field, and
everything the server says comes back as JSON text frames. This module is pure (no sockets):
the gateway calls :func:`parse_listen_query` on the handshake path and the ``*_message``
builders when it speaks, so the documented protocol (docs/protocol.md) lives in one place.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from features.pcm import BYTES_PER_SAMPLE, ENCODINGS, MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from streaming.endpointing import DEFAULT_ENDPOINTING_MS

LISTEN_PATH = "/v1/listen"

# Close codes (RFC 6455 numbers); the reason text and the Error message say what to change.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_BAD_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_LARGE = 1009
CLOSE_INTERNAL = 1011
CLOSE_OVERLOADED = 1013

MIN_ENDPOINTING_MS = 10
MAX_ENDPOINTING_MS = 10_000
MAX_LABEL_CHARS = 64

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""device_id / session_id: 1–64 of ``A-Z a-z 0-9 . _ -``, first one alphanumeric.

Ids end up in file names and lake partitions downstream, so anything that could walk a path
(``/``, ``..`` alone, NUL, spaces) is refused at the door rather than escaped later.
"""

CLIENT_MESSAGE_TYPES = ("KeepAlive", "Finalize", "CloseStream", "Label")
_KNOWN_QUERY_KEYS = frozenset(
    {
        "device_id",
        "encoding",
        "sample_rate",
        "channels",
        "interim_results",
        "endpointing",
        "session_id",
        "resume_from",
        "token",
    }
)


class ProtocolError(Exception):
    """A request or message the server refuses: ``code`` for machines, message for people.

    ``close_code`` is the WebSocket close code to use when the error ends the connection; for
    errors that do not (bad JSON, unknown message type) it is ``None``.
    """

    def __init__(self, code: str, message: str, close_code: int | None = CLOSE_BAD_DATA) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


@dataclass(frozen=True)
class ListenParams:
    """A validated ``/v1/listen`` request.

    ``endpointing_ms`` is ``None`` when the client turned silence endpointing off
    (``endpointing=false``): utterances then end only on Finalize, CloseStream or the maximum
    utterance length.
    """

    device_id: str
    encoding: str = "linear16"
    sample_rate: int = 16_000
    channels: int = 1
    interim_results: bool = False
    endpointing_ms: int | None = DEFAULT_ENDPOINTING_MS
    session_id: str | None = None
    resume_from: int | None = None
    token: str | None = None
    ignored_params: tuple[str, ...] = field(default=())

    @property
    def bytes_per_sample(self) -> int:
        return BYTES_PER_SAMPLE[self.encoding]


def valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ProtocolError("bad_param", f"{name}={value!r} is not a boolean; use true or false")


def _parse_int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ProtocolError(
            "bad_param", f"{name}={value!r} is not an integer; use {low}–{high}"
        ) from None
    if not low <= number <= high:
        raise ProtocolError("bad_param", f"{name}={number} is out of range; use {low}–{high}")
    return number


def _parse_id(name: str, value: str) -> str:
    if not valid_id(value):
        raise ProtocolError(
            "bad_id",
            f"{name} must be 1–64 characters of A-Z a-z 0-9 . _ - starting with a letter or "
            f"digit (got {value[:80]!r})",
        )
    return value


def parse_listen_query(path: str) -> ListenParams:
    """Validate the request path of a ``/v1/listen`` handshake; raise :class:`ProtocolError`."""
    parts = urlsplit(path)
    if parts.path != LISTEN_PATH:
        raise ProtocolError("not_found", f"unknown path {parts.path[:80]!r}; use {LISTEN_PATH}")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query: dict[str, str] = {}
    for key, value in pairs:
        if key in query:
            raise ProtocolError("bad_param", f"query parameter {key!r} is given twice")
        query[key] = value

    if "device_id" not in query:
        raise ProtocolError("bad_param", "device_id is required, e.g. ?device_id=kitchen-01")
    device_id = _parse_id("device_id", query["device_id"])
    encoding = query.get("encoding", "linear16")
    if encoding not in ENCODINGS:
        raise ProtocolError(
            "bad_format",
            f"encoding={encoding[:40]!r} is not supported; use one of {', '.join(ENCODINGS)}",
        )
    sample_rate = _parse_int(
        "sample_rate", query.get("sample_rate", "16000"), MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ
    )
    channels = _parse_int("channels", query.get("channels", "1"), 1, 1)
    interim = _parse_bool("interim_results", query.get("interim_results", "false"))
    endpointing_raw = query.get("endpointing", str(DEFAULT_ENDPOINTING_MS))
    if endpointing_raw.strip().lower() == "false":
        endpointing_ms: int | None = None
    else:
        endpointing_ms = _parse_int(
            "endpointing", endpointing_raw, MIN_ENDPOINTING_MS, MAX_ENDPOINTING_MS
        )
    session_id = _parse_id("session_id", query["session_id"]) if "session_id" in query else None
    resume_from = None
    if "resume_from" in query:
        if session_id is None:
            raise ProtocolError("bad_param", "resume_from needs the session_id it resumes")
        resume_from = _parse_int("resume_from", query["resume_from"], 0, 2**62)
    return ListenParams(
        device_id=device_id,
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        interim_results=interim,
        endpointing_ms=endpointing_ms,
        session_id=session_id,
        resume_from=resume_from,
        token=query.get("token"),
        ignored_params=tuple(sorted(k for k in query if k not in _KNOWN_QUERY_KEYS)),
    )


def query_token(path: str) -> str | None:
    """The ``token`` query parameter, read even when the rest of the query is invalid."""
    for key, value in parse_qsl(urlsplit(path).query, keep_blank_values=True):
        if key == "token":
            return value
    return None


def token_from_header(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Token <key>`` (or ``Bearer <key>``) header."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and key.strip():
        return key.strip()
    return None


@dataclass(frozen=True)
class ClientMessage:
    """A parsed control message: its type and, for ``Label``, the label (None clears it)."""

    type: str
    label: str | None = None


def parse_client_message(text: str) -> ClientMessage:
    """Parse a JSON text frame; raise :class:`ProtocolError` (session continues) when bad."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError(
            "bad_json", 'text frames must be JSON objects like {"type":"KeepAlive"}', None
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("bad_message", "a text frame needs a string field 'type'", None)
    kind = data["type"]
    if kind not in CLIENT_MESSAGE_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {kind[:40]!r}; use one of {', '.join(CLIENT_MESSAGE_TYPES)}",
            None,
        )
    if kind != "Label":
        return ClientMessage(kind)
    label = data.get("label")
    if label is not None and (
        not isinstance(label, str)
        or not 0 < len(label) <= MAX_LABEL_CHARS
        or not label.isprintable()
    ):
        raise ProtocolError(
            "bad_label",
            f"Label.label must be null or a printable string of 1–{MAX_LABEL_CHARS} characters",
            None,
        )
    return ClientMessage(kind, label)


def encode(message: dict[str, Any]) -> str:
    """One server message as compact JSON text."""
    return json.dumps(message, separators=(",", ":"))


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "Error", "code": code, "message": message}


def warning_message(code: str, message: str, **counts: Any) -> dict[str, Any]:
    return {"type": "Warning", "code": code, "message": message, **counts}


def ack_message(seq: int) -> dict[str, Any]:
    return {"type": "Ack", "seq": seq}
