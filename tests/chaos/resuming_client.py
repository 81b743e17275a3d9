"""A device that keeps streaming through gateway crashes: reconnects, resumes, resends.

Each :class:`ResumingStream` sends unique 100-ms PCM16 chunks (seeded noise: no two chunks of
the run share their bytes), paced at a multiple of real time, and keeps a ledger of what it
sent under which server session id and seq and how far each session was acknowledged. When
the connection drops it reconnects (retrying while the gateway is down) and asks to resume
at its last ``Ack`` + 1, sending back the ``resume_token`` its ``Metadata`` carried, if any.
If the server refuses the resume (a restarted gateway may not know the session), it starts a
new session and resends every chunk that was not acknowledged. The session id is always the
one the server gave in ``Metadata``, never one the client makes up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

CHUNK_SAMPLES = 1600
"""100 ms at 16 kHz."""
CHUNK_S = CHUNK_SAMPLES / 16_000


def chunk_bytes(stream: int, index: int) -> bytes:
    """The ``index``-th chunk of stream ``stream``: quiet noise, unique to (stream, index)."""
    rng = np.random.default_rng([stream, index])
    samples = rng.integers(-1500, 1500, CHUNK_SAMPLES, dtype=np.int16)
    samples[:2] = (stream, index % 32768)
    return samples.astype("<i2").tobytes()


@dataclass
class SessionLedger:
    """One server session: the chunk index of each seq sent in it and its Ack watermark."""

    session_id: str
    sent: dict[int, int] = field(default_factory=dict)
    acked: int = -1

    def acked_chunks(self) -> dict[int, int]:
        return {seq: chunk for seq, chunk in self.sent.items() if seq <= self.acked}


@dataclass
class StreamReport:
    sessions: list[SessionLedger]
    connections: int
    resumes: int
    refused_resumes: int
    errors: list[dict[str, Any]]
    closed_cleanly: bool


class ResumingStream:
    """One device: ``await run(stop_sending)`` streams until the event is set, then closes."""

    def __init__(
        self, url: str, index: int, *, token: str | None, speed: float, reconnect_s: float = 60
    ) -> None:
        self.url = url
        self.index = index
        self.token = token
        self.interval_s = CHUNK_S / speed
        self.reconnect_s = reconnect_s
        self.sessions: list[SessionLedger] = []
        self.resume_token: str | None = None
        self.next_chunk = 0
        """Chunk to send next: after a reconnect, the first one not acknowledged."""
        self.connections = 0
        self.resumes = 0
        self.refused_resumes = 0
        self.errors: list[dict[str, Any]] = []
        self.closed_cleanly = False

    @property
    def current(self) -> SessionLedger | None:
        return self.sessions[-1] if self.sessions else None

    def report(self) -> StreamReport:
        return StreamReport(
            self.sessions,
            self.connections,
            self.resumes,
            self.refused_resumes,
            self.errors,
            self.closed_cleanly,
        )

    # ---- connecting --------------------------------------------------------------------------
    def _query(self, resume: bool) -> str:
        query: dict[str, Any] = {"device_id": f"chaos-{self.index}"}
        session = self.current
        if resume and session is not None:
            query["session_id"] = session.session_id
            query["resume_from"] = session.acked + 1
            if self.resume_token:
                query["resume_token"] = self.resume_token
        return f"{self.url}?{urlencode(query)}"

    async def _open(self, resume: bool) -> tuple[ClientConnection, dict[str, Any]]:
        """Connect (retrying while nothing listens); the first server message with it."""
        deadline = time.monotonic() + self.reconnect_s
        headers = {"Authorization": f"Token {self.token}"} if self.token else None
        while True:
            try:
                ws = await connect(
                    self._query(resume),
                    additional_headers=headers,
                    open_timeout=5,
                    compression=None,
                    max_size=2**22,
                )
                first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                return ws, first
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _connect(self) -> ClientConnection:
        """A connection feeding the current session (resumed) or a new one."""
        resume = self.current is not None
        ws, first = await self._open(resume)
        if first.get("type") != "Metadata" and resume:
            # Refused: a gateway that restarted may not know the session. Start a new one and
            # resend everything after the last Ack (the old session keeps what it acked).
            self.refused_resumes += 1
            self.errors.append(first)
            previous = self.current
            assert previous is not None
            self.next_chunk = previous.sent.get(previous.acked + 1, self.next_chunk)
            with contextlib.suppress(ConnectionClosed):
                await ws.close()
            resume = False
            ws, first = await self._open(resume)
        if first.get("type") != "Metadata":
            await ws.close()
            raise RuntimeError(f"stream {self.index}: gateway refused a new session: {first}")
        self.connections += 1
        if resume:
            self.resumes += 1
            assert self.current is not None
            if first["session_id"] != self.current.session_id:
                raise RuntimeError(f"resumed into another session: {first}")
        else:
            self.sessions.append(SessionLedger(first["session_id"]))
        self.resume_token = first.get("resume_token", self.resume_token if resume else None)
        return ws

    # ---- streaming ---------------------------------------------------------------------------
    def _on_message(self, message: dict[str, Any]) -> None:
        session = self.current
        assert session is not None
        if message["type"] == "Ack":
            session.acked = max(session.acked, int(message["seq"]))
        elif message["type"] in ("Error", "Warning"):
            self.errors.append(message)

    async def _receive(self, ws: ClientConnection, final: asyncio.Event) -> None:
        async for raw in ws:
            message = json.loads(raw)
            self._on_message(message)
            if message["type"] == "Metadata" and message.get("final"):
                final.set()

    async def _send(self, ws: ClientConnection, stop_sending: asyncio.Event) -> None:
        session = self.current
        assert session is not None
        seq = session.acked + 1
        self.next_chunk = session.sent.get(seq, self.next_chunk)
        tick = time.monotonic()
        while not stop_sending.is_set():
            session.sent[seq] = self.next_chunk
            await ws.send(chunk_bytes(self.index, self.next_chunk))
            seq += 1
            self.next_chunk += 1
            tick += self.interval_s
            await asyncio.sleep(max(0.0, tick - time.monotonic()))

    async def run(self, stop_sending: asyncio.Event, finish_timeout_s: float = 30) -> None:
        """Stream through every crash until ``stop_sending``; then close and await the Acks."""
        while True:
            ws = await self._connect()
            final = asyncio.Event()
            receiver = asyncio.create_task(self._receive(ws, final))
            try:
                await self._send(ws, stop_sending)
                await ws.send(json.dumps({"type": "CloseStream"}))
                await asyncio.wait_for(final.wait(), finish_timeout_s)
                await asyncio.wait_for(receiver, finish_timeout_s)
                self.closed_cleanly = True
                return
            except (ConnectionClosed, OSError):
                with contextlib.suppress(ConnectionClosed, OSError, asyncio.CancelledError):
                    await receiver  # take every Ack that arrived before the link died
                if final.is_set():
                    self.closed_cleanly = True
                    return
            finally:
                receiver.cancel()
                with contextlib.suppress(Exception):
                    await ws.close()
