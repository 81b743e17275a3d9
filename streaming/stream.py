"""A live stream: one :class:`~streaming.session.Session` plus the asyncio plumbing around it.

The session (pure state) survives reconnects; the connection, its outbox and sender task are
swapped when a device resumes. Spool writes and result jobs belong to the stream, not to the
connection, so a dropped connection never cancels the write of a chunk it already sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from websockets.asyncio.server import ServerConnection

from streaming import protocol as proto
from streaming.outbox import Outbox, spawn
from streaming.session import Session


@dataclass(eq=False)
class Stream:
    """A session and, while a client is connected, its connection and outbox."""

    session: Session
    spool_slots: asyncio.Semaphore
    """Bounded spool writes in flight: the receive loop waits on it (TCP backpressure)."""
    epoch: datetime | None = None
    """UTC capture time of the stream's first sample (event_time of its first chunk)."""
    input_samples: int = 0
    """Samples (at the client's rate) accepted so far: the next chunk's offset from epoch."""
    ws: ServerConnection | None = None
    outbox: Outbox | None = None
    sender: asyncio.Task[None] | None = None
    spool_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    last_result: asyncio.Task[None] | None = None
    """The newest result job; each job waits for the one before it, so results stay in order."""
    drain_requests: list[tuple[bool, asyncio.Future[None]]] = field(default_factory=list)
    """(end of stream?, future) asks for the VAD loop to score everything pending now."""
    detached_at: float | None = None
    finishing: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def attach(self, ws: ServerConnection, outbox_limit: int, ack_interval_s: float) -> None:
        self.ws = ws
        self.detached_at = None
        self.outbox = Outbox(ws, outbox_limit, ack_interval_s)
        self.sender = asyncio.create_task(self.outbox.run(), name="gateway-sender")

    def detach(self, now_s: float) -> ServerConnection | None:
        """Forget the connection (it closed, idled out or was taken over); return it."""
        ws, self.ws, self.outbox = self.ws, None, None
        self.detached_at = now_s
        return ws

    def send(self, message: dict[str, Any], *, droppable: bool = False) -> None:
        """Queue a message for the client; close a client too far behind to take it."""
        if self.outbox is None or self.outbox.put(message, droppable=droppable):
            return
        ws, self.outbox = self.ws, None
        if ws is not None:
            spawn(ws.close(proto.CLOSE_POLICY, "client is not reading results; closing"))

    def want_ack(self) -> None:
        if self.outbox is not None and self.session.durable_seq >= 0:
            self.outbox.want_ack(self.session.durable_seq)
