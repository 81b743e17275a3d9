"""Session ids as the gateway issues them, and the creation time each one carries.

An id is a UUIDv7 (RFC 9562) written as 32 lowercase hex digits: the session's creation time
as 48 bits of Unix milliseconds, the version nibble ``7``, random bits with the RFC's variant,
so ids sort by creation and say what they are. The gateway mints them
(:func:`new_session_id`); the sidecar reads the time back (:func:`created_at`) to place a
session's ``silver.sessions`` row by the day it was opened and to read only the partitions a
batch's sessions can be in, instead of the whole table. Any other id (a UUIDv4, an id from
before this format, a tool's own) carries no time.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime

_UUID7_HEX = re.compile(r"[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}")
EARLIEST_MS = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000)
"""Ids claiming an earlier creation were not minted by a gateway (none ran before 2020)."""
LATEST_MS = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp() * 1000)


def new_session_id() -> str:
    """A UUIDv7 as 32 hex digits: 48-bit Unix time in ms, version 7, 74 random bits."""
    millis = time.time_ns() // 1_000_000 & (2**48 - 1)
    random = int.from_bytes(os.urandom(10), "big")
    value = millis << 80 | 0x7 << 76 | (random >> 68) << 64 | 0b10 << 62 | random & (2**62 - 1)
    return f"{value:032x}"


def created_at(session_id: str) -> datetime | None:
    """When the session was created, from a UUIDv7 id; None for any other id."""
    if not _UUID7_HEX.fullmatch(session_id):
        return None
    millis = int(session_id[:12], 16)
    if not EARLIEST_MS <= millis <= LATEST_MS:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC)
