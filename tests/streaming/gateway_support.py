"""Helpers for the gateway tests: a real gateway in a thread, real clients, real audio.

The gateway runs on a free loopback port with its own event loop in a thread; tests talk to it
with real ``websockets`` clients (sync API) and read what it stored with the real spool reader,
so every check crosses a real socket and a real fsync'd file.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from features.corpus import read_manifest, read_wav
from streaming.gateway.protocol import ListenParams
from streaming.gateway.quota import AudioBucket
from streaming.gateway.results import Classifier
from streaming.gateway.server import Gateway, GatewayConfig
from streaming.gateway.session import Session
from streaming.gateway.stream import Stream
from streaming.spool import SpoolWriter, read_segment, sealed_segments

TEST_CONFIG = GatewayConfig(
    host="127.0.0.1",
    port=0,
    auth_tokens=("test-token",),
    max_sessions=50,
    max_frame_bytes=16 * 1024,
    idle_timeout_s=1.5,
    open_timeout_s=1.0,
    ack_interval_ms=20,
    resume_window_s=30.0,
)


class GatewayThread:
    """Spool writer + gateway on a private event loop; ``stop()`` shuts both down gracefully."""

    def __init__(
        self, config: GatewayConfig, spool_dir: Path, engine: Classifier | None = None
    ) -> None:
        self.config = config
        self.spool_dir = spool_dir
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.gateway: Gateway | None = None
        self.spool: SpoolWriter | None = None

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> GatewayThread:
        self.thread.start()

        async def boot() -> None:
            self.spool = SpoolWriter(self.spool_dir, max_segment_age_s=3600)
            await self.spool.start()
            self.gateway = Gateway(self.config, spool=self.spool, engine=self.engine)
            await self.gateway.start()

        self.call(boot())
        return self

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port

    def url(self, query: str = "device_id=dev-1", token: str | None = "test-token") -> str:
        auth = f"&token={token}" if token else ""
        return f"ws://127.0.0.1:{self.port}/v1/listen?{query}{auth}"

    def seal(self) -> None:
        assert self.spool is not None
        self.call(self.spool.seal())

    def stored(self) -> pa.Table:
        """Every record in sealed segments (seals the open one first)."""
        self.seal()
        tables = [read_segment(s.path) for s in sealed_segments(self.spool_dir)]
        return pa.concat_tables(tables) if tables else pa.table({})

    def stop(self) -> None:
        if not self.loop.is_running():
            return

        async def shutdown() -> None:
            if self.gateway is not None:
                await self.gateway.stop()
            if self.spool is not None:
                await self.spool.close()

        try:
            self.call(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@dataclass(frozen=True)
class CompressedFormat:
    """A way clients send compressed audio: PyAV's muxer and codec to encode it, the
    ``encoding`` to declare (None: a bare container), and the demuxer the gateway picks."""

    muxer: str
    codec: str
    encoding: str | None
    container: str
    lossless: bool

    @property
    def query(self) -> str:
        return f"&encoding={self.encoding}" if self.encoding else ""


COMPRESSED_FORMATS = {
    "ogg-opus": CompressedFormat("ogg", "libopus", "opus", "ogg", lossless=False),
    "webm-opus": CompressedFormat("webm", "libopus", None, "matroska", lossless=False),
    "flac": CompressedFormat("flac", "flac", "flac", "flac", lossless=True),
    "wav": CompressedFormat("wav", "pcm_s16le", None, "wav", lossless=True),
}
"""Ogg and WebM Opus as browsers and ``opusenc`` write them, FLAC, and PCM in a WAV file."""


def bare_stream(spool_limit_bytes: int = 1024 * 1024) -> Stream:
    """A stream with no connection (session ``s``, device ``d``): spool plumbing alone."""
    session = Session(
        "s",
        ListenParams(device_id="d"),
        credential="c",
        resume_digest="r",
        max_pending_ms=100,
        max_utterance_ms=1000,
    )
    return Stream(session, spool_limit_bytes, AudioBucket(1.0, 1.0))


def speech_stream(shared_data: Path, words: int = 2, gap_s: float = 0.7) -> np.ndarray:
    """Real keywords (16 kHz PCM16) separated by silence: each should give one utterance."""
    clips = [
        c
        for c in read_manifest(shared_data / "speech_commands" / "manifest.csv")
        if c.label in ("yes", "no", "stop")
    ]
    gap = np.zeros(int(16_000 * gap_s), dtype=np.int16)
    parts = [gap]
    for clip in clips[:words]:
        samples, _ = read_wav(clip.path)
        parts += [samples, gap]
    return np.concatenate(parts)


def chunks(samples: np.ndarray, chunk_samples: int = 1600) -> list[bytes]:
    return [samples[i : i + chunk_samples].tobytes() for i in range(0, samples.size, chunk_samples)]


def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("max_size", 2**22)
    kwargs.setdefault("compression", None)
    return connect(url, **kwargs)


def next_message(ws: ClientConnection, timeout_s: float = 5.0, skip_acks: bool = True) -> dict:
    """The next JSON message (Acks skipped unless asked for)."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if not (skip_acks and message["type"] == "Ack"):
            return message


@dataclass
class Transcript:
    """Everything a connection received until it closed."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def max_ack(self) -> int:
        return max((m["seq"] for m in self.of("Ack")), default=-1)


def read_until_closed(ws: ClientConnection, timeout_s: float = 10.0) -> Transcript:
    """Read every message until the server closes the connection (or the timeout)."""
    transcript = Transcript()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server did not close the connection in time")
            transcript.messages.append(json.loads(ws.recv(timeout=remaining)))
    except ConnectionClosed as closed:
        frame = closed.rcvd
        transcript.close_code = frame.code if frame is not None else None
        transcript.close_reason = frame.reason if frame is not None else ""
    return transcript


class Relay:
    """A TCP relay to ``target_port`` whose links can be cut at once (a network drop)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class RelayThread:
    """A :class:`Relay` on its own event loop in a thread, for synchronous tests."""

    def __init__(self, target_port: int) -> None:
        self.relay = Relay(target_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> int:
        self.thread.start()
        return int(asyncio.run_coroutine_threadsafe(self.relay.start(), self.loop).result(10))

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self.relay.cut)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.relay.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
