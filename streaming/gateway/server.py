"""The WebSocket gateway: admission, sessions, the receive path, the spool and shutdown.

One asyncio process serves every connection. Per chunk the receive path only validates the
frame, gives it a sequence number, starts its spool write and queues its audio; the heavy work
runs in batches elsewhere
(:class:`~streaming.gateway.processing.SpeechProcessor` for VAD and results,
:class:`~streaming.spool.SpoolWriter` group commits for durability).

Every queue is bounded: spool writes in flight per session (the receive loop waits, which is
TCP backpressure — an accepted chunk's spool write is never dropped), unprocessed audio per
session (the oldest is dropped, counted and reported in a ``Warning``), and outgoing messages
per connection (interim results are dropped first; a client that reads nothing is closed).
Anything a client sends wrong is answered with an ``Error`` and, where the connection cannot
go on, a documented close code (docs/protocol.md); it never touches other sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from features.pcm import SAMPLE_RATE_HZ
from streaming.gateway import protocol as proto
from streaming.gateway.http import make_process_request
from streaming.gateway.metrics import GatewayMetrics
from streaming.gateway.outbox import spawn
from streaming.gateway.processing import SpeechProcessor
from streaming.gateway.protocol import ListenParams, ProtocolError
from streaming.gateway.results import Classifier
from streaming.gateway.session import Session
from streaming.gateway.stream import Stream
from streaming.spool import SpoolRecord, SpoolWriter, records_to_batch
from streaming.vad import DEFAULT_GATE_DBFS, BatchedVad

log = logging.getLogger("sonolake.gateway")

ENDED_SESSIONS_REMEMBERED = 10_000
"""Closed session ids kept to refuse a resume of a finished session."""


@dataclass(frozen=True)
class GatewayConfig:
    """Server limits and timings (the command line builds it from Settings)."""

    host: str = "127.0.0.1"
    port: int = 8765
    """0 picks a free port (tests, benchmarks); :attr:`Gateway.port` tells which."""
    auth_tokens: tuple[str, ...] = ()
    allow_anonymous_loopback: bool = True
    max_connections: int = 1000
    max_frame_bytes: int = 128 * 1024
    """Largest binary frame accepted; a bigger one closes the connection with 1009."""
    idle_timeout_s: float = 10.0
    """No frame at all (audio or KeepAlive) for this long closes the connection."""
    open_timeout_s: float = 10.0
    """A client must finish the HTTP/WebSocket handshake within this time (slow clients)."""
    max_pending_ms: int = 2000
    """Unprocessed audio a session may queue before the oldest is dropped from processing."""
    max_spool_inflight: int = 256
    """Chunks per session waiting for the spool before reading from its socket pauses."""
    outbox_limit: int = 256
    """Messages queued for one client before interims are dropped and then it is closed."""
    interim_interval_ms: int = 250
    ack_interval_ms: int = 500
    """Least time between two Acks to one client (the last one always goes out at close)."""
    vad_tick_ms: float = 25.0
    vad_gate_dbfs: float | None = DEFAULT_GATE_DBFS
    max_utterance_ms: int = 10_000
    resume_window_s: float = 60.0
    """How long a disconnected session stays resumable before it is ended."""
    warning_interval_s: float = 1.0
    """Least time between two backpressure Warnings to one session."""
    top_k: int = 3


def _is_loopback(address: Any) -> bool:
    try:
        host = address[0] if isinstance(address, tuple) else str(address)
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def _warm_up_spool_encoding() -> None:
    now = datetime.now(UTC)
    probe = SpoolRecord.chunk(
        session_id="warm-up",
        device_id="warm-up",
        seq=0,
        event_time=now,
        sample_rate=16000,
        encoding="linear16",
        pcm=b"",
        received_at=now,
    )
    records_to_batch([probe])


class Gateway:
    """The ``/v1/listen`` server: ``await start()``, then ``await stop()`` (graceful)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        spool: SpoolWriter,
        engine: Classifier | None = None,
        vad: BatchedVad | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.engine = engine
        self.metrics = GatewayMetrics()
        self.streams: dict[str, Stream] = {}
        self.processor = SpeechProcessor(
            vad or BatchedVad(gate_dbfs=config.vad_gate_dbfs),
            engine,
            self.metrics,
            tick_ms=config.vad_tick_ms,
            interim_interval_ms=config.interim_interval_ms,
            top_k=config.top_k,
            streams=lambda: list(self.streams.values()),
        )
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._connections: set[ServerConnection] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self._stopping = False
        self.started_at = time.time()
        self.metrics.gauge(
            "sessions_active", "Connections streaming now", lambda: len(self._connections)
        )
        self.metrics.gauge("sessions", "Sessions open or resumable", lambda: len(self.streams))
        self.metrics.gauge(
            "spool_pending",
            "Chunks accepted but not yet durable in the spool",
            lambda: sum(s.spool_pending for s in list(self.streams.values())),
        )
        self.metrics.gauge(
            "model_loaded",
            "1 when a classifier is loaded",
            lambda: float(self.processor.model_loaded),
        )

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        # The first Arrow conversion of a tz-aware timestamp imports pandas (seconds of CPU);
        # pay it before listening rather than inside the first client's first group commit.
        await asyncio.to_thread(_warm_up_spool_encoding)
        # Everything imported so far (numpy, scipy, pandas, onnxruntime…) lives as long as the
        # process: move it out of the collector's reach, or a full collection walks it all and
        # stalls every session for 100+ ms (measured: 168 ms gen-2 pauses under 100 streams).
        gc.collect()
        gc.freeze()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=make_process_request(self._health, self._render_metrics),
            max_size=self.config.max_frame_bytes,
            open_timeout=self.config.open_timeout_s,
            compression=None,
            server_header="sonolake-gateway",
        )
        self._tasks = [
            asyncio.create_task(self.processor.run(), name="gateway-vad"),
            asyncio.create_task(self._reaper_loop(), name="gateway-reaper"),
        ]
        log.info("gateway listening on %s:%s", self.config.host, self.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{proto.LISTEN_PATH}"

    async def stop(self) -> None:
        """Graceful stop: no new connections; every session flushed, ended and closed (1001).

        The spool writer belongs to the caller, who closes it after this returns.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close(close_connections=False)
        await asyncio.gather(
            *(
                self._finish(stream, reason="shutdown", close_code=proto.CLOSE_GOING_AWAY)
                for stream in list(self.streams.values())
            ),
            return_exceptions=True,
        )
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.processor.close()
        gc.unfreeze()  # let the interpreter tear down normally (native extensions check this)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_engine(self, engine: Classifier | None) -> None:
        """Serve with this classifier from now on (the CLI loads it after listening)."""
        self.engine = engine
        self.processor.engine = engine

    # ---- HTTP ------------------------------------------------------------------------------
    def _health(self) -> dict[str, Any]:
        loaded = self.processor.model_loaded
        return {
            "status": "stopping" if self._stopping else "ok",
            "connections": len(self._connections),
            "sessions": len(self.streams),
            "model_loaded": loaded,
            "model_version": self.engine.model_version if loaded and self.engine else None,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def _render_metrics(self) -> bytes:
        return self.metrics.render()

    # ---- admission -------------------------------------------------------------------------
    async def _refuse(self, ws: ServerConnection, error: ProtocolError) -> None:
        """Tell the client what to change, then close with the error's code."""
        self.metrics.connections_rejected[error.code] += 1
        self.metrics.client_errors[error.code] += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(proto.encode(proto.error_message(error.code, error.message)))
            await ws.close(error.close_code or proto.CLOSE_BAD_DATA, error.message[:120])

    def _admit(self, ws: ServerConnection) -> ListenParams:
        """Connection limit, then auth, then the query; raises ProtocolError with a close code."""
        if self._stopping:
            raise ProtocolError("shutting_down", "server is shutting down", proto.CLOSE_GOING_AWAY)
        if len(self._connections) >= self.config.max_connections:
            raise ProtocolError(
                "overloaded",
                f"server is at its limit of {self.config.max_connections} connections; retry",
                proto.CLOSE_OVERLOADED,
            )
        request = ws.request
        assert request is not None
        try:
            params: ListenParams | None = proto.parse_listen_query(request.path)
        except ProtocolError:
            params = None
        token = proto.token_from_header(request.headers.get("Authorization")) or (
            proto.query_token(request.path)
        )
        if self.config.auth_tokens:
            if token is None or not any(
                hmac.compare_digest(token.encode(), known.encode())
                for known in self.config.auth_tokens
            ):
                raise ProtocolError(
                    "unauthorized",
                    "missing or unknown token; send 'Authorization: Token <key>' or ?token=",
                    proto.CLOSE_POLICY,
                )
        elif not (self.config.allow_anonymous_loopback and _is_loopback(ws.remote_address)):
            raise ProtocolError(
                "unauthorized",
                "this server takes no clients without a token from this address; "
                "configure auth tokens",
                proto.CLOSE_POLICY,
            )
        return params or proto.parse_listen_query(request.path)  # the second raises precisely

    def _attach(self, ws: ServerConnection, params: ListenParams) -> tuple[Stream, bool]:
        """The stream this connection feeds: a resumed one, or a new one."""
        session_id = params.session_id
        if session_id is not None and session_id in self._ended:
            raise ProtocolError(
                "session_closed", f"session {session_id} has ended; start a new session"
            )
        stream = self.streams.get(session_id) if session_id else None
        if stream is not None:
            before = stream.session.params
            if stream.session.device_id != params.device_id or stream.finishing:
                raise ProtocolError(
                    "session_mismatch", f"session {session_id} belongs to another device"
                )
            if (before.encoding, before.sample_rate) != (params.encoding, params.sample_rate):
                raise ProtocolError(
                    "format_mismatch",
                    f"session {session_id} streams {before.encoding} at {before.sample_rate} "
                    "Hz; resume it with the same encoding and sample_rate",
                )
            stale = stream.detach(time.monotonic())  # the device reconnected: old link is dead
            if stale is not None:
                spawn(stale.close(proto.CLOSE_GOING_AWAY, "session resumed on a new connection"))
        resumed = stream is not None
        if stream is None:
            session = Session(
                session_id or uuid.uuid4().hex,
                params,
                max_pending_ms=self.config.max_pending_ms,
                max_utterance_ms=self.config.max_utterance_ms,
                first_seq=params.resume_from or 0,
            )
            stream = Stream(session, self.config.max_spool_inflight)
            stream.spool_room.set()
            stream.spool_writer = asyncio.create_task(self._spool_loop(stream))
            self.streams[session.session_id] = stream
        stream.session.resume(params.resume_from)
        stream.session.last_activity = time.monotonic()
        stream.attach(ws, self.config.outbox_limit, self.config.ack_interval_ms / 1000)
        return stream, resumed

    def _metadata(self, stream: Stream, *, resumed: bool) -> dict[str, Any]:
        session, params = stream.session, stream.session.params
        loaded = self.processor.model_loaded
        message: dict[str, Any] = {
            "type": "Metadata",
            "request_id": uuid.uuid4().hex,
            "session_id": session.session_id,
            "device_id": session.device_id,
            "model_loaded": loaded,
            "model_version": self.engine.model_version if loaded and self.engine else None,
            "encoding": params.encoding,
            "sample_rate": params.sample_rate,
            "channels": params.channels,
            "processing_sample_rate": SAMPLE_RATE_HZ,
            "interim_results": params.interim_results,
            "endpointing_ms": params.endpointing_ms,
            "resumed": resumed,
            "next_seq": session.next_seq,
            "durable_seq": session.durable_seq,
        }
        if not loaded:
            message["note"] = "no model is loaded: results mark speech segments without labels"
        return message

    # ---- one connection --------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        try:
            params = self._admit(ws)
            stream, resumed = self._attach(ws, params)
        except ProtocolError as error:
            await self._refuse(ws, error)
            return
        sender = stream.sender
        self._connections.add(ws)
        self.metrics.sessions_opened += 1
        stream.send(self._metadata(stream, resumed=resumed))
        if params.ignored_params:
            ignored = ", ".join(params.ignored_params)
            stream.send(
                proto.warning_message("ignored_params", f"unknown query parameters: {ignored}")
            )
        stream.want_ack()
        try:
            await self._receive(stream, ws)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("session %s failed", stream.session.session_id)
            await self._refuse(
                ws, ProtocolError("internal", "internal error", proto.CLOSE_INTERNAL)
            )
        finally:
            self._connections.discard(ws)
            if stream.ws is ws and not stream.finishing:
                stream.detach(time.monotonic())
            if sender is not None:
                sender.cancel()

    async def _receive(self, stream: Stream, ws: ServerConnection) -> None:
        session = stream.session
        async for message in ws:
            if stream.ws is not ws:
                return  # idled out, or taken over by a resumed connection
            session.last_activity = time.monotonic()
            if isinstance(message, bytes):
                if not await self._on_audio(stream, ws, message):
                    return
                continue
            try:
                command = proto.parse_client_message(message)
            except ProtocolError as error:
                self.metrics.client_errors[error.code] += 1
                stream.send(proto.error_message(error.code, error.message))
                continue
            if command.type == "Label":
                session.label = command.label
            elif command.type == "Finalize":
                await self.processor.drain(stream, end_of_stream=False)
                self.processor.end_utterance(stream, "finalize")
            elif command.type == "CloseStream":
                await self._finish(stream, reason="close_stream", close_code=proto.CLOSE_NORMAL)
                return

    async def _on_audio(self, stream: Stream, ws: ServerConnection, pcm: bytes) -> bool:
        """Accept one audio frame; False when the frame ended the connection."""
        session = stream.session
        if stream.finishing:
            return False
        bytes_per_sample = session.params.bytes_per_sample
        if not pcm or len(pcm) % bytes_per_sample:
            await self._refuse(
                ws,
                ProtocolError(
                    "bad_frame",
                    f"audio frame of {len(pcm)} bytes is not a whole number of "
                    f"{session.params.encoding} samples ({bytes_per_sample} bytes each)",
                ),
            )
            return False
        seq, duplicate = session.assign_seq()
        if duplicate:  # sent again after a resume: stored and processed once already
            self.metrics.duplicate_chunks += 1
            stream.want_ack()
            return True
        samples = len(pcm) // bytes_per_sample
        rate = session.params.sample_rate
        received_at = datetime.now(UTC)
        if stream.epoch is None:
            stream.epoch = received_at - timedelta(seconds=samples / rate)
        event_time = stream.epoch + timedelta(seconds=stream.input_samples / rate)
        stream.input_samples += samples
        record = SpoolRecord.chunk(
            session_id=session.session_id,
            device_id=session.device_id,
            seq=seq,
            event_time=event_time,
            sample_rate=rate,
            encoding=session.params.encoding,
            pcm=pcm,
            label=session.label,
            received_at=received_at,
        )
        if len(stream.spool_queue) >= stream.spool_limit:
            await stream.spool_room.wait()  # the spool is behind: stop reading this socket
        stream.queue_for_spool(record, time.perf_counter())
        self.metrics.chunks += 1
        dropped = session.feed(seq, pcm)
        if dropped:
            self._report_drops(stream, dropped)
        self.processor.audio_arrived(stream)
        return True

    async def _spool_loop(self, stream: Stream) -> None:
        """The stream's spool writer: queued chunks → one group commit → durable → Ack."""
        session = stream.session
        queue = stream.spool_queue
        while True:
            if not queue:
                if stream.spool_closing:
                    return
                stream.spool_wakeup.clear()
                await stream.spool_wakeup.wait()
                continue
            batch = list(queue)
            queue.clear()
            stream.spool_room.set()
            stream.spool_in_flight = len(batch)
            try:
                if len(batch) == 1:
                    await self.spool.append(batch[0][0])
                else:
                    await asyncio.gather(*(self.spool.append(record) for record, _ in batch))
            except Exception:
                # Never acknowledged: these seqs stay below the Ack watermark for good.
                log.exception("spool write failed for %s", session.session_id)
                self.metrics.client_errors["spool_failed"] += 1
                stream.spool_failed = True
                ws = stream.ws
                if ws is not None:
                    stream.send(proto.error_message("internal", "could not store audio durably"))
                    spawn(ws.close(proto.CLOSE_INTERNAL, "spool write failed"))
                continue
            finally:
                stream.spool_in_flight = 0
            durable_at = time.perf_counter()
            for record, received_s in batch:
                self.metrics.spool_lag_seconds.observe(durable_at - received_s)
                session.mark_durable(record.seq)
            stream.want_ack()

    def _report_drops(self, stream: Stream, dropped: int) -> None:
        self.metrics.dropped_chunks += dropped
        session = stream.session
        now = time.monotonic()
        if now - session.last_warning_at < self.config.warning_interval_s:
            return
        session.last_warning_at = now
        stream.send(
            proto.warning_message(
                "backpressure",
                "processing fell behind: the oldest unprocessed audio was dropped from live "
                "results (it is still stored)",
                dropped_chunks=session.drops_unreported,
                dropped_chunks_total=session.totals.dropped_chunks,
                dropped_ms_total=round(session.totals.dropped_ms, 1),
            )
        )
        session.drops_unreported = 0

    # ---- ending sessions -------------------------------------------------------------------
    async def _finish(self, stream: Stream, *, reason: str, close_code: int | None) -> None:
        """Flush, final results, ``session_end`` record, closing Metadata, close. Once."""
        if stream.finishing:
            await stream.finished.wait()
            return
        stream.finishing = True
        try:
            await self._finish_once(stream, reason, close_code)
        finally:
            stream.finished.set()

    async def _finish_once(self, stream: Stream, reason: str, close_code: int | None) -> None:
        session = stream.session
        try:
            await asyncio.wait_for(self.processor.drain(stream, end_of_stream=True), 10.0)
        except TimeoutError:
            log.warning("session %s: flushing audio timed out", session.session_id)
        self.processor.end_utterance(stream, "close")
        if stream.last_result is not None:
            with contextlib.suppress(Exception):
                await stream.last_result
        stream.spool_closing = True  # every decision is queued: the writer drains and ends
        stream.spool_wakeup.set()
        if stream.spool_writer is not None:
            await asyncio.gather(stream.spool_writer, return_exceptions=True)
        model_version = (
            self.engine.model_version if self.engine and self.processor.model_loaded else None
        )
        totals = {
            **session.totals.as_dict(),
            "model_version": model_version,
            "closed_reason": reason,
            "last_seq": session.accepted_high,
            "durable_seq": session.durable_seq,
        }
        try:
            await self.spool.append(
                SpoolRecord.session_end(
                    session_id=session.session_id,
                    device_id=session.device_id,
                    event_time=datetime.now(UTC),
                    sample_rate=session.params.sample_rate,
                    encoding=session.params.encoding,
                    meta_json=json.dumps(totals),
                )
            )
        except Exception:
            log.exception("could not write session_end for %s", session.session_id)
        session.closed = True
        self.processor.release(stream)
        self.streams.pop(session.session_id, None)
        self._ended[session.session_id] = None
        while len(self._ended) > ENDED_SESSIONS_REMEMBERED:
            self._ended.popitem(last=False)
        ws, outbox = stream.ws, stream.outbox
        if ws is None or outbox is None:
            return
        stream.want_ack()
        await outbox.flush()  # results and the last Ack go out before the closing Metadata
        closing = self._metadata(stream, resumed=False)
        del closing["request_id"]
        closing.update({"final": True, "closed_reason": reason, "totals": totals})
        outbox.put(closing)
        await outbox.flush()
        with contextlib.suppress(ConnectionClosed):
            await ws.close(close_code or proto.CLOSE_NORMAL, reason)

    async def _reaper_loop(self) -> None:
        """Close idle connections; end sessions whose device did not come back in time."""
        period_s = max(0.05, min(0.5, self.config.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period_s)
            now = time.monotonic()
            for stream in list(self.streams.values()):
                if stream.finishing:
                    continue
                idle_s = now - stream.session.last_activity
                if stream.ws is not None and idle_s > self.config.idle_timeout_s:
                    ws = stream.detach(now)
                    assert ws is not None
                    error = ProtocolError(
                        "idle_timeout",
                        f"no audio or KeepAlive for {self.config.idle_timeout_s:g} s; "
                        "send KeepAlive while silent",
                        proto.CLOSE_POLICY,
                    )
                    spawn(self._refuse(ws, error))
                elif (
                    stream.ws is None
                    and stream.detached_at is not None
                    and now - stream.detached_at > self.config.resume_window_s
                ):
                    spawn(self._finish(stream, reason="disconnected", close_code=None))
