"""Decoder priming: the header a compressed session's decoder needs, kept durably per session.

A container's header (Ogg identification and comment pages, FLAC metadata, WebM tracks, a
WAV header) is sent once, at the stream's start. A session resumed by a process that did not
see that start (the gateway restarted, another worker took the session) needs it to decode
the resumed bytes, so the gateway writes it here as soon as the header is complete, before
it acknowledges the chunk that completed it, and removes it when the session ends.

One small file per session, ``<spool>/priming/<session_id>.json`` (session ids are server
issued: 32 hex digits), written atomically (temporary file, fsync, rename, fsync of the
folder). It holds the device id so that erasure can remove a device's files
(:func:`purge_device_priming`), and no audio: the header ends where the first audio unit
begins. Look-ups are by session id alone (:func:`load_decoder_priming`), which is what a
registry of resumable sessions has in hand when it accepts a resume; whoever ends a session
that no process is serving any more (its resume window passed) calls
:func:`drop_decoder_priming`.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from streaming.spool.format import fsync_dir

PRIMING_DIR = "priming"
PRIMING_FORMAT_VERSION = 1
_SUFFIX = ".json"


@dataclass(frozen=True, slots=True)
class DecoderPriming:
    """What a fresh decoder needs to continue a compressed session's stream."""

    session_id: str
    device_id: str
    container: str
    """The container the stream is in: ``ogg``, ``matroska``, ``flac`` or ``wav``."""
    encoding: str | None
    """The ``encoding`` the client declared (``opus``, ``flac``), None for a bare container."""
    header: bytes
    """The stream's first bytes up to its first audio unit."""


def priming_path(spool_dir: Path, session_id: str) -> Path:
    if not session_id.isalnum():  # server-issued ids only: never a path of the client's
        raise ValueError(f"session_id {session_id!r} is not a server-issued id")
    return Path(spool_dir) / PRIMING_DIR / f"{session_id}{_SUFFIX}"


def save_decoder_priming(spool_dir: Path, priming: DecoderPriming) -> None:
    """Write the session's priming durably (replacing any earlier one); blocking I/O."""
    path = priming_path(spool_dir, priming.session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": PRIMING_FORMAT_VERSION,
        "session_id": priming.session_id,
        "device_id": priming.device_id,
        "container": priming.container,
        "encoding": priming.encoding,
        "header_b64": base64.b64encode(priming.header).decode("ascii"),
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load_decoder_priming(spool_dir: Path, session_id: str) -> DecoderPriming | None:
    """The priming saved for ``session_id``, or None (not compressed, ended, or its header
    never completed)."""
    try:
        path = priming_path(spool_dir, session_id)
        document = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if document.get("format") != PRIMING_FORMAT_VERSION:
        return None
    return DecoderPriming(
        session_id=document["session_id"],
        device_id=document["device_id"],
        container=document["container"],
        encoding=document["encoding"],
        header=base64.b64decode(document["header_b64"]),
    )


def drop_decoder_priming(spool_dir: Path, session_id: str) -> None:
    """The session ended: its stream will not resume (idempotent)."""
    path = priming_path(spool_dir, session_id)
    if path.exists():
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)


def _files(spool_dir: Path) -> list[Path]:
    folder = Path(spool_dir) / PRIMING_DIR
    return sorted(folder.glob(f"*{_SUFFIX}")) if folder.is_dir() else []


def purge_device_priming(spool_dir: Path, device_id: str) -> int:
    """Remove every priming file of the device (erasure); returns how many."""
    removed = 0
    for path in _files(spool_dir):
        raw = path.read_bytes()
        try:
            mine = json.loads(raw).get("device_id") == device_id
        except ValueError:  # unreadable: judged by its bytes, as quarantined segments are
            mine = device_id.encode() in raw
        if mine:
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        fsync_dir(Path(spool_dir) / PRIMING_DIR)
    return removed
