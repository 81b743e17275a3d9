"""Session ids as the gateway issues them, and the creation time each one carries.

An id is 32 lowercase hex digits: the session's creation time as 48 bits of Unix
milliseconds, then 80 random bits, so ids sort by creation. The gateway mints them
(:func:`new_session_id`); the sidecar reads the time back (:func:`created_at`) to know which
``silver.sessions`` partitions a session's row can be in, instead of reading the whole table
for every batch.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime

_ISSUED = re.compile(r"[0-9a-f]{32}")


def new_session_id() -> str:
    """32 hex digits: 48-bit Unix time in ms, then 80 random bits (sorts by creation)."""
    millis = time.time_ns() // 1_000_000
    return f"{millis & (2**48 - 1):012x}{int.from_bytes(os.urandom(10), 'big'):020x}"


def created_at(session_id: str) -> datetime | None:
    """When the gateway created the session, from an id it issued; None for any other id
    (a spool written by other tools, older data)."""
    if not _ISSUED.fullmatch(session_id):
        return None
    return datetime.fromtimestamp(int(session_id[:12], 16) / 1000, UTC)
