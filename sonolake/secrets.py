"""Secrets are never printed: one masking helper for `config`, settings errors, logs and errors.

A secret reaches output in three ways, and each has one answer here:

- **a setting that is a secret** (API tokens, S3 keys, any ``SecretStr``, any field whose name
  says token, secret, password or access key) is shown as :data:`MASK`, whatever its value —
  :func:`masked_setting`;
- **a secret inside an ordinary value**: the password of a URI (``postgresql://u:pw@db/x``)
  and credential-like query parameters (``?token=…``, ``X-Amz-Signature=…``) are replaced by
  :data:`MASK` wherever text is printed — :func:`mask_text`;
- **a known secret value quoted anywhere else** (a token echoed in an exception, a log line
  with a request path): every configured secret is registered once (:func:`register`) and
  every log record, CLI error and uncaught traceback is scrubbed of it (:func:`install`).

The mask never depends on the secret (no prefix, length or hash), so output reveals nothing
about it; short values (< :data:`MIN_SECRET_CHARS`) are masked as settings but not searched
for in free text, where they would blank out ordinary words.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from pydantic import SecretStr

MASK = "***"
MIN_SECRET_CHARS = 4
"""Secret values shorter than this are not searched for in free text."""

_SECRET_NAME = re.compile(r"token|secret|passw|credential|access_key|api_key", re.IGNORECASE)
"""Setting names whose values are secrets (``auth_tokens``, ``aws_secret_access_key`` …)."""

_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)(?P<pw>[^\s@'\"]+)@")
"""``scheme://user:password@`` — the password part (``/`` allowed: raw S3 secret keys have it)."""

_SECRET_PARAM = re.compile(
    r"(?P<head>[?&;\s](?:token|resume_token|access_token|api_key|apikey|password|passwd|"
    r"secret|signature|x-amz-signature|x-amz-credential|x-amz-security-token)=)"
    r"(?P<value>[^&\s'\"#]+)",
    re.IGNORECASE,
)
"""A credential-like query (or ``key=value``) parameter: its value."""

_AUTH_HEADER = re.compile(
    r"(?P<head>Authorization['\"]?\s*[:=,]\s*['\"]?(?:Token|Bearer|Basic)\s+)(?P<value>[^\s'\",]+)",
    re.IGNORECASE,
)
"""``Authorization: Token <key>`` as it would appear in a logged header."""

_known: set[str] = set()
_lock = threading.Lock()


def is_secret_name(name: str) -> bool:
    """Whether a setting of this name holds a secret (by its name alone)."""
    return _SECRET_NAME.search(name) is not None


def register(values: Iterable[str | SecretStr | None]) -> None:
    """Remember secret values so :func:`mask_text` scrubs them from any text from now on."""
    with _lock:
        for value in values:
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            if raw and len(raw) >= MIN_SECRET_CHARS:
                _known.add(raw)


def mask_text(text: str) -> str:
    """``text`` with URI passwords, credential parameters and registered secrets masked."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # longest first: no partial leftovers
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    text = _URI_PASSWORD.sub(lambda m: m["head"] + MASK + "@", text)
    text = _SECRET_PARAM.sub(lambda m: m["head"] + MASK, text)
    return _AUTH_HEADER.sub(lambda m: m["head"] + MASK, text)


def masked_setting(name: str, value: Any) -> str:
    """How the setting ``name`` with ``value`` may be printed."""
    if isinstance(value, SecretStr) or is_secret_name(name):
        if value is None or value == "" or value == []:
            return str(value)
        if isinstance(value, list | tuple):
            return f"[{', '.join(MASK for _ in value)}]"  # how many, never what
        return MASK
    return mask_text(str(value))


def settings_secrets(settings: Any) -> list[str]:
    """Every secret value a :class:`~sonolake.settings.Settings` holds (for :func:`register`)."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif is_secret_name(name) and value:
            found.extend(str(v) for v in (value if isinstance(value, list | tuple) else [value]))
        elif isinstance(value, str):
            found.extend(m["pw"] for m in _URI_PASSWORD.finditer(value))
    return found


# ---- logs and uncaught errors ----------------------------------------------------------------
_base_factory = logging.getLogRecordFactory()
_installed = False


def _masking_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Records with the message and traceback already rendered and masked.

    Rendering at creation costs nothing extra (records are only made for enabled levels) and
    masks every handler alike: those configured later, by libraries, or by pytest's capture.
    """
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave the record as it is, logging reports it
        return record
    record.msg, record.args = mask_text(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = mask_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        record.stack_info = mask_text(record.stack_info)
    return record


def _masking_excepthook(
    kind: type[BaseException], error: BaseException, tb: TracebackType | None
) -> None:
    sys.stderr.write(mask_text("".join(traceback.format_exception(kind, error, tb))))


def install(settings: Any | None = None) -> None:
    """Mask secrets in every log record and uncaught traceback of this process.

    Called by the command line once settings are read; registers ``settings``' secrets.
    """
    global _installed
    if settings is not None:
        register(settings_secrets(settings))
    if _installed:
        return
    logging.setLogRecordFactory(_masking_record_factory)
    sys.excepthook = _masking_excepthook
    _installed = True
