"""A device client for ``/v1/listen`` that survives drops: every chunk it sends lands once.

The client keeps every chunk it sent until the gateway acknowledges it (``Ack`` = durable in
the spool). When the connection drops — network, gateway restart, ``kill -9`` — it reconnects
with ``session_id`` (and the ``resume_token`` the gateway gave, when it gives one) and
``resume_from`` = the first unacknowledged seq, then resends exactly the unacknowledged chunks
in order, each after the ``Label`` that was active when it was first sent. The gateway stores
a resent chunk it already has once (same ``(session_id, seq)``), so nothing lands twice.

Refusals are handled as documented in docs/protocol.md: ``overloaded``/1013 and connection
errors are retried with exponential back-off and jitter, up to ``give_up_after_s`` without a
connection; a gateway that no longer knows the session (it ended, or the gateway forgot it)
makes the client start a new session with what is still unacknowledged; anything else
(``unauthorized``, a bad query, ``bad_frame``) is raised as :class:`ClientError`.

Use it as an async context manager::

    async with DeviceClient("ws://gw:8765/v1/listen", device_id="kitchen-1", token=key) as dev:
        await dev.label("yes")
        for chunk in chunks:                      # 100 ms of linear16 each
            await dev.send_audio(chunk)
        totals = await dev.close_stream()         # the final Metadata's totals
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger("sonolake.client")

CLOSE_OVERLOADED = 1013
RETRY_CODES = frozenset({"overloaded", "shutting_down", "internal"})
"""Error codes after which the same request is retried later (with back-off)."""
NEW_SESSION_CODES = frozenset(
    {"session_closed", "session_unknown", "session_mismatch", "resume_refused"}
)
"""Error codes meaning the session cannot be resumed: continue in a new session."""
_UNSET = object()


class ClientError(Exception):
    """The gateway refused the client for good (``code``, ``close_code``), or is unreachable."""

    def __init__(self, message: str, code: str | None = None, close_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.close_code = close_code


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``base_s`` × 2^attempt, capped at ``max_s``, times 0.5–1."""

    base_s: float = 0.1
    max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0)


@dataclass
class ClientStats:
    """What the client did: connections, resumes, resent chunks, retries after 1013."""

    connections: int = 0
    resumes: int = 0
    new_sessions: int = 0
    resent_chunks: int = 0
    overloaded_retries: int = 0
    sessions: list[str] = field(default_factory=list)
    close_code: int | None = None


class DeviceClient:
    """One device's stream; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        device_id: str | None = None,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        backoff: Backoff = Backoff(),
        give_up_after_s: float = 60.0,
        max_unacked_chunks: int = 1000,
        open_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.query: dict[str, Any] = dict(params or {})
        if device_id is not None:
            self.query["device_id"] = device_id
        self.token = token
        self.on_message = on_message
        self.backoff = backoff
        self.give_up_after_s = give_up_after_s
        self.max_unacked_chunks = max_unacked_chunks
        self.open_timeout_s = open_timeout_s
        self.stats = ClientStats()
        self.session_id: str | None = None
        self.resume_token: str | None = None
        self.acked = -1
        """Highest seq the gateway acknowledged in the current session."""
        self.final: dict[str, Any] | None = None
        """The closing Metadata, once received."""
        self._pending: deque[tuple[int, str | None, bytes]] = deque()
        """(seq, label in force, bytes) of each chunk sent and not acknowledged yet."""
        self._next_seq = 0
        self._label: str | None = None
        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._progress = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    # ---- the caller's side ---------------------------------------------------------------
    async def __aenter__(self) -> DeviceClient:
        self._supervisor = asyncio.create_task(self._supervise(), name="device-client")
        try:
            await self._wait(self._connected)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await self._supervisor
        if self._ws is not None:
            await self._ws.close()

    @property
    def unacked(self) -> int:
        return len(self._pending)

    async def send_audio(self, frame: bytes) -> int:
        """Send one chunk (kept until acknowledged); returns its seq in the current session.

        Waits while ``max_unacked_chunks`` are unacknowledged (the gateway is behind or away).
        """
        while len(self._pending) >= self.max_unacked_chunks:
            await self._wait(self._progress)
        self._raise_failure()
        async with self._send_lock:  # a resend in progress finishes first: order is kept
            seq = self._next_seq
            self._next_seq += 1
            self._pending.append((seq, self._label, frame))
            await self._send_now(frame)
        return seq

    async def label(self, label: str | None) -> None:
        """Ground truth for the chunks that follow (``None`` clears it); resent on resume."""
        self._raise_failure()
        async with self._send_lock:
            self._label = label
            await self._send_now(json.dumps({"type": "Label", "label": label}))

    async def finalize(self) -> None:
        await self._send_live(json.dumps({"type": "Finalize"}))

    async def close_stream(self) -> dict[str, Any]:
        """Send CloseStream and wait (across reconnects) for the closing Metadata's totals."""
        self._closing = True
        await self._send_live(json.dumps({"type": "CloseStream"}))
        if self._supervisor is not None:
            await asyncio.shield(self._supervisor)
        self._raise_failure()
        return dict((self.final or {}).get("totals") or {})

    # ---- internals ----------------------------------------------------------------------
    def _raise_failure(self) -> None:
        failure = self._failure
        if isinstance(failure, ClientError):  # a fresh one each time: no growing traceback
            raise ClientError(str(failure), failure.code, failure.close_code)
        if failure is not None:
            raise ClientError(f"{type(failure).__name__}: {failure}") from failure

    async def _wait(self, event: asyncio.Event) -> None:
        """Wait for ``event`` unless the supervisor ends first (then raise its failure)."""
        assert self._supervisor is not None
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait(
            {waiter, self._supervisor}, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            self._raise_failure()
            raise ClientError("the client stopped", close_code=self.stats.close_code)
        event.clear()

    async def _send_live(self, message: str) -> None:
        """Send a control message now if connected (a resume re-sends what it must)."""
        self._raise_failure()
        async with self._send_lock:
            await self._send_now(message)

    async def _send_now(self, message: bytes | str) -> None:
        """Send if connected (call with the send lock held); a drop is the supervisor's."""
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(message)

    def _url(self) -> str:
        query = dict(self.query)
        if self.session_id is not None:
            query["session_id"] = self.session_id
            query["resume_from"] = self._pending[0][0] if self._pending else self._next_seq
            if self.resume_token is not None:
                query["resume_token"] = self.resume_token
        for key, value in list(query.items()):
            if isinstance(value, bool):
                query[key] = str(value).lower()
        return f"{self.url}?{urlencode(query)}"

    async def _supervise(self) -> None:
        attempt, unreachable_since = 0, asyncio.get_running_loop().time()
        try:
            while True:
                outcome = await self._one_connection()
                if outcome == "done":
                    return
                now = asyncio.get_running_loop().time()
                if outcome == "connected":
                    attempt, unreachable_since = 0, now
                elif now - unreachable_since > self.give_up_after_s:
                    raise ClientError(
                        f"no connection to {self.url} for {self.give_up_after_s:g} s; giving up"
                    )
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
        except Exception as exc:  # kept for the caller, raised from its next call
            self._failure = exc

    async def _one_connection(self) -> str:
        """One connection's life: "done", "connected" (then dropped) or "failed" (retry)."""
        headers = {"Authorization": f"Token {self.token}"} if self.token else None
        try:
            ws = await connect(
                self._url(),
                additional_headers=headers,
                max_size=2**22,
                open_timeout=self.open_timeout_s,
                compression=None,
            )
        except InvalidStatus as exc:  # an HTTP answer, not a WebSocket: retrying will not help
            status = exc.response.status_code
            if status >= 500:
                return "failed"
            hint = (
                f": {self.url} is not the WebSocket route; use ws://HOST:PORT/v1/listen"
                if status < 300 or status == 404
                else ""
            )
            raise ClientError(f"HTTP {status}{hint}") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.info("connect to %s failed: %s", self.url, exc)
            return "failed"
        self.stats.connections += 1
        try:
            async with self._send_lock:
                first = await self._first_message(ws)
                if first.get("type") == "Error":
                    return await self._refused(ws, first)
                self._opened(first)
                await self._resend(ws)
                self._ws = ws
            self._connected.set()
            await self._read(ws)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self.stats.close_code = ws.close_code
            await ws.close()
        if self.final is not None:
            self._pending.clear()
            if self._closing:
                return "done"
            self._start_new_session()  # the gateway ended the session (shutdown) under us
        elif ws.close_code == CLOSE_OVERLOADED:
            self.stats.overloaded_retries += 1
            return "failed"
        return "connected"

    async def _first_message(self, ws: ClientConnection) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await ws.recv())
        if self.on_message is not None:
            self.on_message(message)
        return message

    async def _refused(self, ws: ClientConnection, error: dict[str, Any]) -> str:
        code = str(error.get("code"))
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(ws.wait_closed(), 5)
        self.stats.close_code = ws.close_code
        if code in RETRY_CODES:
            self.stats.overloaded_retries += code == "overloaded"
            return "failed"
        if code in NEW_SESSION_CODES and self.session_id is not None:
            self._start_new_session()
            return "failed"
        raise ClientError(f"{code}: {error.get('message')}", code=code, close_code=ws.close_code)

    def _opened(self, metadata: dict[str, Any]) -> None:
        session_id = metadata.get("session_id")
        if self.session_id is not None and session_id == self.session_id:
            self.stats.resumes += 1
        elif session_id is not None:
            self.stats.sessions.append(str(session_id))
        self.session_id = session_id
        self.resume_token = metadata.get("resume_token", self.resume_token)

    def _start_new_session(self) -> None:
        """Continue in a fresh session: unacknowledged chunks are renumbered from 0."""
        self.stats.new_sessions += 1
        self.session_id = self.resume_token = None
        self.final = None
        self.acked = -1
        self._pending = deque((i, label, data) for i, (_, label, data) in enumerate(self._pending))
        self._next_seq = len(self._pending)

    async def _resend(self, ws: ClientConnection) -> None:
        """Unacknowledged chunks in order, each after the Label that applied to it."""
        sent_label: object = _UNSET
        for _, label, data in list(self._pending):
            if label != sent_label:
                await ws.send(json.dumps({"type": "Label", "label": label}))
                sent_label = label
            await ws.send(data)
            self.stats.resent_chunks += 1
        if self._label != sent_label and (self._pending or self._label is not None):
            await ws.send(json.dumps({"type": "Label", "label": self._label}))
        if self._closing:
            await ws.send(json.dumps({"type": "CloseStream"}))

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "Ack":
                self.acked = max(self.acked, int(message["seq"]))
                while self._pending and self._pending[0][0] <= self.acked:
                    self._pending.popleft()
                self._progress.set()
            elif kind == "Metadata" and message.get("final"):
                self.final = message
            if self.on_message is not None:
                self.on_message(message)
