"""The ``/v1/listen`` wire protocol: query parameters, message shapes and close codes.

Conventions follow the live speech APIs users already know (Deepgram, AssemblyAI): audio goes
up as raw binary frames, control messages as small JSON text frames with a ``type`` field, and
everything the server says comes back as JSON text frames. This module is pure (no sockets):
the gateway calls :func:`parse_listen_query` on the handshake path and the ``*_message``
builders when it speaks, so the documented protocol (docs/protocol.md) lives in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from features.pcm import BYTES_PER_SAMPLE, ENCODINGS, MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from streaming.endpointing import DEFAULT_ENDPOINTING_MS
from streaming.gateway.assemblyai import ASSEMBLYAI_PATH
from streaming.gateway.assemblyai import CLIENT_MESSAGES as ASSEMBLYAI_MESSAGES
from streaming.gateway.assemblyai import ENCODINGS as ASSEMBLYAI_ENCODINGS

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
MAX_RESUME_TOKEN_CHARS = 128

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""device_id / session_id: 1–64 of ``A-Z a-z 0-9 . _ -``, first one alphanumeric.

Ids end up in file names and lake partitions downstream, so anything that could walk a path
(``/``, ``..`` alone, NUL, spaces) is refused at the door rather than escaped later.
"""

CLIENT_MESSAGE_TYPES = ("KeepAlive", "Finalize", "CloseStream", "Label")
COMPRESSED_ENCODINGS: tuple[str, ...] = ("opus", "flac")
"""Compressed encodings, decoded on the server (:mod:`streaming.gateway.decode`).

As with Deepgram, ``opus`` means Ogg Opus (what ``MediaRecorder`` and ``opusenc`` write) or
WebM Opus, and ``flac`` a FLAC stream; a container sent with no ``encoding`` is recognised by
its first bytes (WAV, Ogg, WebM/Matroska, FLAC).
"""
MODEL_ALIASES = ("champion", "challenger")
DEFAULT_DEVICE_ID = "anonymous"
"""device_id of an anonymous (loopback, no token) client that names no device or tag."""
MIN_UTTERANCE_END_MS = 1000
"""Deepgram's documented minimum for ``utterance_end_ms``."""

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
        "resume_token",
        "token",
        "model",
        "tag",
        "vad_events",
        "utterance_end_ms",
    }
)
DEEPGRAM_QUERY_KEYS = frozenset(
    {
        "callback",
        "callback_method",
        "detect_entities",
        "diarize",
        "diarize_model",
        "dictation",
        "extra",
        "keyterm",
        "keywords",
        "language",
        "language_hint",
        "mip_opt_out",
        "multichannel",
        "numerals",
        "profanity_filter",
        "punctuate",
        "redact",
        "replace",
        "search",
        "smart_format",
        "version",
    }
)
"""Deepgram ``/v1/listen`` parameters that mean nothing for keyword classification.

They are accepted (so a Deepgram client connects unchanged) and named in a ``Warning``.
"""
_REPEATABLE_KEYS = frozenset(
    {"tag", "extra", "keyterm", "keywords", "language_hint", "redact", "replace", "search"}
)
"""Deepgram list parameters, which its SDKs send as repeated keys."""


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
    """As sent (``linear16``, ``mulaw``, ``opus``, ``flac``); ``linear16`` when not given."""
    sample_rate: int = 16_000
    channels: int = 1
    interim_results: bool = False
    endpointing_ms: int | None = DEFAULT_ENDPOINTING_MS
    session_id: str | None = None
    """Only to resume: the server-issued id from the session's first ``Metadata``."""
    resume_token: str | None = None
    """The resume secret from that ``Metadata``; required with ``session_id``."""
    resume_from: int | None = None
    token: str | None = None
    ignored_params: tuple[str, ...] = field(default=())
    """Unknown query parameters (named in a Warning)."""
    encoding_given: bool = False
    """False when the client sent no ``encoding``: a container is then recognised by its bytes."""
    device_source: str = "query"
    """Where ``device_id`` came from: ``query``, ``tag``, ``credential`` or ``default``."""
    model: str = "champion"
    """Requested model: ``champion``, ``challenger``, a version number, or a foreign name."""
    vad_events: bool = True
    """Send ``SpeechStarted`` (Sonolake's default; Deepgram's is false)."""
    utterance_end_ms: int | None = None
    deepgram_params: tuple[str, ...] = field(default=())
    """Deepgram parameters accepted without effect (named in a Warning)."""
    dialect: str = "sonolake"
    """``sonolake`` (``/v1/listen``, Deepgram's fields included) or ``assemblyai`` (``/v3/ws``)."""

    @property
    def compressed(self) -> bool:
        return self.encoding in COMPRESSED_ENCODINGS

    @property
    def pcm_encoding(self) -> str:
        """The encoding of the audio the session processes and stores (decoded if compressed)."""
        return "linear16" if self.compressed else self.encoding

    @property
    def bytes_per_sample(self) -> int:
        return BYTES_PER_SAMPLE[self.pcm_encoding]

    @property
    def model_fallback(self) -> bool:
        """True when ``model`` names no Sonolake model (a Deepgram name): the champion serves."""
        return self.model not in MODEL_ALIASES and not self.model.isdigit()


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


def credential_device_id(credential: str) -> str:
    """A stable device id for a credential: ``key-`` and 16 hex digits of its SHA-256.

    The key itself never reaches the lake; the same key always maps to the same device.
    """
    return device_for_digest(
        hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()
    )


def device_for_digest(token_digest: str) -> str:
    """The device id of a credential known by its SHA-256 hex digest (what the gateway keeps)."""
    return "key-" + token_digest[:16]


def _device(
    query: dict[str, str], tags: list[str], credential_device: str | None
) -> tuple[str, str]:
    """(device_id, where it came from): ``device_id``, else Deepgram's first ``tag``, else the
    credential, else :data:`DEFAULT_DEVICE_ID`."""
    if "device_id" in query:
        return _parse_id("device_id", query["device_id"]), "query"
    if tags:
        return _parse_id("tag", tags[0]), "tag"
    if credential_device:
        return credential_device, "credential"
    return DEFAULT_DEVICE_ID, "default"


def parse_listen_query(path: str, credential_device: str | None = None) -> ListenParams:
    """Validate the request path of a ``/v1/listen`` handshake; raise :class:`ProtocolError`.

    ``credential_device`` (:func:`credential_device_id` of the client's token, if any) names
    the device when the query does not.
    """
    parts = urlsplit(path)
    if parts.path not in (LISTEN_PATH, ASSEMBLYAI_PATH):
        raise ProtocolError("not_found", f"unknown path {parts.path[:80]!r}; use {LISTEN_PATH}")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    dialect = "sonolake"
    if parts.path == ASSEMBLYAI_PATH:
        dialect = "assemblyai"
        pairs = _assemblyai_query(pairs)
    query: dict[str, str] = {}
    tags: list[str] = []
    for key, value in pairs:
        if key == "tag":
            tags.append(value)
        if key in query and key not in _REPEATABLE_KEYS:
            raise ProtocolError("bad_param", f"query parameter {key!r} is given twice")
        query.setdefault(key, value)

    device_id, device_source = _device(query, tags, credential_device)
    encoding = query.get("encoding", "linear16")
    if encoding not in (*ENCODINGS, *COMPRESSED_ENCODINGS):
        supported = ", ".join((*ENCODINGS, *COMPRESSED_ENCODINGS))
        raise ProtocolError(
            "bad_format",
            f"encoding={encoding[:40]!r} is not supported; use one of {supported}, "
            "or send a WAV/Ogg/WebM/FLAC container with no encoding",
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
    resume_token = query.get("resume_token") or None
    if (session_id is None) != (resume_token is None):
        # Session ids are issued by the server; a client never names a new session, so two
        # streams can never share one (and with it a lake key).
        raise ProtocolError(
            "bad_param",
            "session_id and resume_token go together, to resume a session: use the two values "
            "from its first Metadata; omit both to start a new session (the server issues its id)",
        )
    if resume_token is not None and not 0 < len(resume_token) <= MAX_RESUME_TOKEN_CHARS:
        raise ProtocolError(
            "bad_param", f"resume_token must be 1–{MAX_RESUME_TOKEN_CHARS} characters"
        )
    resume_from = None
    if "resume_from" in query:
        if session_id is None:
            raise ProtocolError("bad_param", "resume_from needs the session_id it resumes")
        resume_from = _parse_int("resume_from", query["resume_from"], 0, 2**62)
    model = query.get("model", "champion").strip() or "champion"
    if len(model) > MAX_LABEL_CHARS or not model.isprintable():
        raise ProtocolError("bad_param", f"model must be 1–{MAX_LABEL_CHARS} printable characters")
    utterance_end_ms = (
        _parse_int(
            "utterance_end_ms", query["utterance_end_ms"], MIN_UTTERANCE_END_MS, MAX_ENDPOINTING_MS
        )
        if "utterance_end_ms" in query
        else None
    )
    return ListenParams(
        device_id=device_id,
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        interim_results=interim,
        endpointing_ms=endpointing_ms,
        session_id=session_id,
        resume_token=resume_token,
        resume_from=resume_from,
        token=query.get("token"),
        ignored_params=tuple(
            sorted(k for k in query if k not in _KNOWN_QUERY_KEYS | DEEPGRAM_QUERY_KEYS)
        ),
        encoding_given="encoding" in query,
        device_source=device_source,
        model=model,
        vad_events=_parse_bool("vad_events", query.get("vad_events", "true")),
        utterance_end_ms=utterance_end_ms,
        deepgram_params=tuple(sorted(k for k in query if k in DEEPGRAM_QUERY_KEYS)),
        dialect=dialect,
    )


def _assemblyai_query(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """AssemblyAI's query in Sonolake's terms: its ``encoding`` names mapped, interim turns
    on, and its other parameters (``speech_model``, ``format_turns``, …) dropped silently —
    the dialect has no Warning message to name them in."""
    out = []
    for key, value in pairs:
        if key == "encoding":
            out.append((key, ASSEMBLYAI_ENCODINGS.get(value, value)))
        elif key in ("sample_rate", "token", "session_id", "resume_from", "device_id"):
            out.append((key, value))
    return [*out, ("interim_results", "true")]


def query_token(path: str) -> str | None:
    """The ``token`` query parameter, read even when the rest of the query is invalid."""
    for key, value in parse_qsl(urlsplit(path).query, keep_blank_values=True):
        if key == "token":
            return value
    return None


def token_from_header(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Token <key>`` (or ``Bearer <key>``) header, or of a bare
    ``Authorization: <key>`` (how AssemblyAI's clients send theirs)."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if not key and scheme.lower() not in ("token", "bearer", "basic"):
        return scheme
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
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers over Python's digit limit (4300).
        raise ProtocolError(
            "bad_json", 'text frames must be JSON objects like {"type":"KeepAlive"}', None
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("bad_message", "a text frame needs a string field 'type'", None)
    kind: str = ASSEMBLYAI_MESSAGES.get(data["type"]) or data["type"]
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
    """An ``Error``; ``variant``/``description`` repeat it in Deepgram's field names."""
    return {
        "type": "Error",
        "code": code,
        "message": message,
        "variant": code,
        "description": message,
    }


def warning_message(code: str, message: str, **counts: Any) -> dict[str, Any]:
    return {"type": "Warning", "code": code, "message": message, **counts}


def ack_message(seq: int) -> dict[str, Any]:
    return {"type": "Ack", "seq": seq}


def served_role(params: ListenParams, challenger_version: str | None) -> str:
    """Which held model serves a session: ``challenger`` when the client asked for it (by the
    alias or by its version number) and the gateway holds one, else ``champion``."""
    if challenger_version is not None and params.model in ("challenger", challenger_version):
        return "challenger"
    return "champion"


def connection_warnings(
    params: ListenParams,
    champion_version: str | None,
    served_version: str | None = None,
    served_role: str = "champion",
) -> list[dict[str, Any]]:
    """Warnings owed right after the opening ``Metadata``: parameters that change nothing.

    ``served_version``/``served_role`` say what answers the session (the champion, the
    challenger, or a version it named, ``held``; by default the champion); a ``model`` they do
    not answer gets a Warning naming the champion, which then serves.
    """
    served_version = champion_version if served_version is None else served_version
    warnings = []
    if params.ignored_params:
        ignored = ", ".join(params.ignored_params)
        warnings.append(warning_message("ignored_params", f"unknown query parameters: {ignored}"))
    if params.deepgram_params:
        names = ", ".join(params.deepgram_params)
        warnings.append(
            warning_message(
                "unsupported_params",
                f"accepted with no effect (keyword classification, not transcription): {names}",
            )
        )
    served = f"version {champion_version}" if champion_version else "no model yet"
    if params.model_fallback:
        warnings.append(
            warning_message(
                "model_fallback",
                f"model={params.model!r} is not a Sonolake model; the champion ({served}) "
                "serves this session",
            )
        )
    elif params.model not in ("champion", served_role, served_version):
        warnings.append(
            warning_message(
                "model_unavailable",
                f"model={params.model!r} is not served by this gateway; the champion "
                f"({served}) serves this session",
            )
        )
    return warnings
