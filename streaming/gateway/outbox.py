"""Messages on their way to one client: a bounded queue, one sender task, coalesced Acks.

A client that reads slowly must not slow the gateway or other sessions, and must not grow
memory without bound. So each connection has an :class:`Outbox` of at most ``limit`` messages:
when it is full the oldest *droppable* message (an interim result, superseded by the next one)
makes room; when nothing can be dropped the client is too far behind and the caller closes it.
Acks are not queued at all: the outbox remembers the highest durable seq and sends one ``Ack``
per ``ack_interval_s`` at most, which is all a client needs to free its resend buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streaming.gateway import protocol as proto

_BACKGROUND: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run a coroutine in the background, keeping a reference until it finishes."""
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class Outbox:
    """Bounded queue of messages to one client, sent by one task; Acks are coalesced."""

    def __init__(
        self,
        ws: ServerConnection,
        limit: int,
        ack_interval_s: float,
        translate: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.ws = ws
        self.translate = translate
        """Rewrites each message for the client's dialect (None: not sent); None: as is."""
        self.limit = limit
        self.ack_interval_s = ack_interval_s
        self._queue: deque[tuple[dict[str, Any], bool]] = deque()
        self._event = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._ack_wanted = -1
        self._ack_sent = -1
        self._ack_sent_at = 0.0
        self._ack_timer: asyncio.TimerHandle | None = None
        self.dropped_messages = 0
        self.stopped = False

    def put(self, message: dict[str, Any], *, droppable: bool = False) -> bool:
        """Queue a message; False when the client is too far behind to take more."""
        if self.stopped:
            return True
        if len(self._queue) >= self.limit:
            for index, (_, can_drop) in enumerate(self._queue):
                if can_drop:
                    del self._queue[index]
                    self.dropped_messages += 1
                    break
            else:
                return False
        self._queue.append((message, droppable))
        self._idle.clear()
        self._event.set()
        return True

    def want_ack(self, seq: int) -> None:
        """Ack ``seq`` now if the last Ack is old enough, else once the interval has passed."""
        if seq <= self._ack_wanted:
            return
        self._ack_wanted = seq
        self._idle.clear()
        if self._ack_timer is not None:
            return  # an Ack is already scheduled; it will carry this seq
        wait_s = self._ack_sent_at + self.ack_interval_s - time.monotonic()
        if wait_s <= 0:
            self._event.set()
        else:
            self._ack_timer = asyncio.get_running_loop().call_later(wait_s, self._ack_due)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until everything queued (and the latest Ack) has been handed to the socket."""
        if self._ack_timer is not None:  # the last Ack goes out now, whatever the interval
            self._ack_timer.cancel()
            self._ack_timer = None
        self._event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def run(self) -> None:
        try:
            while True:
                await self._event.wait()
                self._event.clear()
                while self._queue:
                    message, _ = self._queue.popleft()
                    await self._send(message)
                if self._ack_wanted > self._ack_sent and self._ack_timer is None:
                    seq = self._ack_wanted
                    await self._send(proto.ack_message(seq))
                    self._ack_sent = seq
                    self._ack_sent_at = time.monotonic()
                if not self._queue and self._ack_wanted <= self._ack_sent:
                    self._idle.set()
        except ConnectionClosed:
            pass
        finally:
            self.stopped = True
            self._idle.set()
            if self._ack_timer is not None:
                self._ack_timer.cancel()

    async def _send(self, message: dict[str, Any]) -> None:
        out = message if self.translate is None else self.translate(message)
        if out is not None:
            await self.ws.send(proto.encode(out))

    def _ack_due(self) -> None:
        self._ack_timer = None
        self._event.set()
