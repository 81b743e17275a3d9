"""The WebSocket gateway: admission, sessions, the receive path, the spool and shutdown.

One asyncio process serves every connection. Per chunk the receive path only validates the
frame, gives it a sequence number, starts its spool write and queues its audio; the heavy work
runs in batches elsewhere
(:class:`~streaming.gateway.processing.SpeechProcessor` for VAD and results,
:class:`~streaming.spool.SpoolWriter` group commits for durability).

Sessions are issued here (:mod:`streaming.gateway.admission` decides who may open one) and
counted against quotas: all sessions, open or resumable, and sessions per credential. Every
queue is bounded: audio bytes held for the spool per session (the receive loop waits, which is
TCP backpressure — an accepted chunk's spool write is never dropped; the same pause enforces
the audio rate limit of :mod:`streaming.gateway.quota`), unprocessed audio per
session (the oldest is dropped, counted and reported in a ``Warning``), and outgoing messages
per connection (interim results are dropped first; a client that reads nothing is closed).
Anything a client sends wrong is answered with an ``Error`` and, where the connection cannot
go on, a documented close code (docs/protocol.md); it never touches other sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from features.pcm import SAMPLE_RATE_HZ
from streaming.gateway import protocol as proto
from streaming.gateway.admission import (
    Admission,
    Credential,
    digest,
    new_resume_token,
    own_origins,
    same_digest,
    select_subprotocol,
)
from streaming.gateway.decode import DecodeError, StreamDecoder, open_decoder
from streaming.gateway.held_versions import HeldVersions, VersionLoader
from streaming.gateway.http import make_process_request
from streaming.gateway.metrics import GatewayMetrics
from streaming.gateway.outbox import spawn
from streaming.gateway.processing import SpeechProcessor
from streaming.gateway.protocol import ListenParams, ProtocolError
from streaming.gateway.quota import AudioBucket
from streaming.gateway.registry import REGISTRY_FILE, SessionRegistry, SessionRow
from streaming.gateway.results import Classifier
from streaming.gateway.session import Session
from streaming.gateway.shadow import ShadowCollector, ShadowScorer
from streaming.gateway.spooling import spool_loop
from streaming.gateway.stream import Stream
from streaming.gateway.workers import WorkerBoard
from streaming.session_ids import new_session_id
from streaming.spool import SpoolRecord, SpoolWriter, records_to_batch
from streaming.spool.priming import (
    DecoderPriming,
    drop_decoder_priming,
    load_decoder_priming,
    save_decoder_priming,
)
from streaming.vad import DEFAULT_GATE_DBFS, BatchedVad

log = logging.getLogger("sonolake.gateway")

RESUME_REFUSED = (
    "this session cannot be resumed: it has ended, this server does not know it, or the "
    "credential, device_id or resume_token differ; start a new session (omit session_id) and "
    "send again every chunk that was not acknowledged"
)
"""The one answer to every failed resume, so that it reveals nothing about other sessions."""
_NO_SESSION_DIGEST = digest("no session")


@dataclass(frozen=True)
class GatewayConfig:
    """Server limits and timings (the command line builds it from Settings)."""

    host: str = "127.0.0.1"
    port: int = 8765
    """0 picks a free port (tests, benchmarks); :attr:`Gateway.port` tells which."""
    auth_tokens: tuple[str, ...] = ()
    allow_anonymous_loopback: bool = True
    allowed_origins: tuple[str, ...] = ()
    """Browser origins admitted in anonymous mode besides the gateway's own page."""
    max_sessions: int = 1000
    """Sessions open or resumable at once; a new one beyond it gets 1013."""
    max_sessions_per_credential: int = 1000
    """Sessions (open or resumable) one token may hold; a new one beyond it gets 1008."""
    max_frame_bytes: int = 128 * 1024
    """Largest binary frame accepted; a bigger one closes the connection with 1009."""
    idle_timeout_s: float = 10.0
    """No frame at all (audio or KeepAlive) for this long closes the connection."""
    open_timeout_s: float = 10.0
    """A client must finish the HTTP/WebSocket handshake within this time (slow clients)."""
    max_pending_ms: int = 2000
    """Unprocessed audio a session may queue before the oldest is dropped from processing."""
    max_spool_queue_bytes: int = 1024 * 1024
    """Audio bytes per session held for the spool before reading from its socket pauses."""
    rate_audio_s_per_s: float = 10.0
    """Sustained audio a session may send, in audio-seconds per second (10: ten times live)."""
    rate_burst_audio_s: float = 60.0
    """Audio-seconds a session may send at once (catch-up after a reconnect)."""
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
    shadow_windows_per_s: float = 20.0
    """CPU budget of shadow scoring: most challenger windows (1 s each) per second; 0 is off."""
    shadow_queue: int = 32
    """Segments waiting for the challenger before new ones are dropped (counted)."""
    held_versions: int = 2
    """Most other model versions held at once for sessions that name one (``model=<version>``)."""
    metrics_token: str | None = None
    """When set, ``/metrics`` needs ``Authorization: Bearer <metrics_token>`` (else 401)."""
    certfile: str | None = None
    """PEM certificate chain: serve ``wss://`` and ``https://`` (with ``keyfile``)."""
    keyfile: str | None = None
    registry_path: str | None = None
    """The host's session registry (SQLite) shared by every worker; None: beside the spool."""
    worker: int | None = None
    """This process's worker number under ``sonolake gateway --workers N`` (in Metadata)."""
    heartbeat_s: float = 1.0
    """How often connected sessions are marked alive in the registry (and moves noticed)."""


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
        board: WorkerBoard | None = None,
        challenger: Classifier | None = None,
    ) -> None:
        self.config = config
        self.board = board
        """Where the workers of ``sonolake gateway --workers N`` share health and metrics."""
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
        self.shadow = ShadowScorer(
            spool, max_windows_per_s=config.shadow_windows_per_s, queue_limit=config.shadow_queue
        )
        self.shadow.challenger = challenger
        self.processor.shadow = self.shadow
        self.held_versions = HeldVersions(limit=config.held_versions)
        self.metrics.registry.register(ShadowCollector(self.shadow))
        self.admission = Admission(
            config.auth_tokens,
            allow_anonymous_loopback=config.allow_anonymous_loopback,
            allowed_origins=config.allowed_origins,
        )
        self._connections: set[ServerConnection] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self._stopping = False
        self._opening_credentials: list[str] = []
        """Credential of each session being opened now (between quota check and registry)."""
        owner = f"w{config.worker if config.worker is not None else 0}:{os.getpid()}:"
        registry_path = Path(config.registry_path or spool.spool_dir / REGISTRY_FILE)
        self.registry = SessionRegistry(registry_path, owner + os.urandom(4).hex())
        self.priming_dir = registry_path.parent
        """Where compressed sessions' headers are kept: beside the registry, so whichever
        worker a resume reaches finds them (every worker's spool folder is below it)."""
        self.started_at = time.time()
        self.metrics.gauge(
            "sessions_active", "Connections streaming now", lambda: len(self._connections)
        )
        self.metrics.gauge("sessions", "Sessions open or resumable", lambda: len(self.streams))
        self.metrics.gauge(
            "sessions_resumable",
            "Sessions whose client left and may come back",
            lambda: sum(s.ws is None for s in list(self.streams.values())),
        )
        self.metrics.gauge(
            "buffered_bytes",
            "Audio bytes held in memory by all sessions (processing buffers and spool queues)",
            lambda: sum(
                s.session.buffer_bytes + s.spool_pending_bytes for s in list(self.streams.values())
            ),
        )
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
        await self.registry.open()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            ssl=self._tls_context(),
            select_subprotocol=select_subprotocol,
            process_request=make_process_request(
                self._health, self._render_metrics, metrics_token=self.config.metrics_token
            ),
            max_size=self.config.max_frame_bytes,
            open_timeout=self.config.open_timeout_s,
            compression=None,
            server_header="sonolake-gateway",
            reuse_port=self.config.worker is not None,
        )
        await self._publish()
        self._tasks = [
            asyncio.create_task(self.processor.run(), name="gateway-vad"),
            asyncio.create_task(self._reaper_loop(), name="gateway-reaper"),
            asyncio.create_task(self._heartbeat_loop(), name="gateway-heartbeat"),
            asyncio.create_task(self.shadow.run(), name="gateway-shadow"),
        ]
        log.info("gateway listening on %s:%s", self.config.host, self.port)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.certfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.certfile, self.config.keyfile)
        return context

    @property
    def tls(self) -> bool:
        return self.config.certfile is not None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{self.config.host}:{self.port}{proto.LISTEN_PATH}"

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
        with contextlib.suppress(TimeoutError):  # shadow records are best-effort: bounded wait
            await asyncio.wait_for(self.shadow.drained(), 5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.registry.close()
        self.processor.close()
        self.held_versions.close()
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

    def set_challenger(self, challenger: Classifier | None) -> None:
        """Hold this challenger from now on: it shadow-scores, and serves ``model=challenger``."""
        self.shadow.challenger = challenger

    def set_version_loader(self, loader: VersionLoader | None) -> None:
        """Load a version a session names (``model=<version>``) with this (the CLI sets it)."""
        self.held_versions.loader = loader

    @property
    def challenger(self) -> Classifier | None:
        return self.shadow.challenger

    def _challenger_version(self) -> str | None:
        challenger = self.shadow.challenger
        return challenger.model_version if challenger is not None and challenger.loaded else None

    async def _choose_classifier(self, stream: Stream) -> None:
        """Decided once per session (a resume, on any worker, decides the same way): the
        challenger when asked for, a version the session names (loaded on first use), else
        the champion (``classifier`` None)."""
        params = stream.session.params
        if proto.served_role(params, self._challenger_version()) == "challenger":
            stream.classifier = self.shadow.challenger
        elif params.model.isdigit() and params.model != self._champion_version():
            stream.classifier = await self.held_versions.get(params.model)

    def _champion_version(self) -> str | None:
        engine = self.engine
        return engine.model_version if engine is not None and engine.loaded else None

    def _served_role(self, stream: Stream) -> str:
        if stream.classifier is None:
            return "champion"
        return "challenger" if stream.classifier is self.shadow.challenger else "held"

    def _served_version(self, stream: Stream) -> str | None:
        """The version that answers this stream: its chosen challenger's, else the champion's."""
        engine = stream.classifier or self.engine
        return engine.model_version if engine is not None and engine.loaded else None

    # ---- HTTP ------------------------------------------------------------------------------
    def _health(self) -> dict[str, Any]:
        """This process's health, and with workers every worker's (``workers``)."""
        own = self._own_health()
        return own if self.board is None else self.board.health(own)

    def _own_health(self) -> dict[str, Any]:
        loaded = self.processor.model_loaded
        return {
            "status": "stopping" if self._stopping else "ok",
            "connections": len(self._connections),
            "sessions": len(self.streams),
            "model_loaded": loaded,
            "model_version": self.engine.model_version if loaded and self.engine else None,
            "challenger_version": self._challenger_version(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "worker": self.config.worker,
            "pid": os.getpid(),
        }

    def _render_metrics(self) -> bytes:
        own = self.metrics.render()
        return own if self.board is None else self.board.metrics(own)

    async def _publish(self) -> None:
        """Share this worker's health and series with the other workers (one scrape)."""
        if self.board is not None:
            await asyncio.to_thread(self.board.publish, self._own_health(), self.metrics.render())

    # ---- admission -------------------------------------------------------------------------
    async def _refuse(self, ws: ServerConnection, error: ProtocolError) -> None:
        """Tell the client what to change, then close with the error's code."""
        self.metrics.connections_rejected[error.code] += 1
        self.metrics.client_errors[error.code] += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(proto.encode(proto.error_message(error.code, error.message)))
            await ws.close(error.close_code or proto.CLOSE_BAD_DATA, error.message[:120])

    def _admit(self, ws: ServerConnection) -> tuple[ListenParams, Credential]:
        """Auth, then the query; raises ProtocolError with a close code.

        Authentication comes first so that a client without a valid credential learns
        nothing else (not even which query parameters are wrong).
        """
        if self._stopping:
            raise ProtocolError("shutting_down", "server is shutting down", proto.CLOSE_GOING_AWAY)
        request = ws.request
        assert request is not None
        own = own_origins(self.config.host, self.port, tls=self.tls)
        credential = self.admission.authenticate(
            request.path, request.headers, ws.remote_address, own
        )
        return proto.parse_listen_query(request.path, credential.device_id), credential

    @property
    def _live_since(self) -> float:
        """Unix time before which a registry row no longer counts as open or resumable: the
        resume window, plus two heartbeats of slack for connected sessions."""
        return time.time() - self.config.resume_window_s - 2 * self.config.heartbeat_s

    async def _check_quotas(self, credential: Credential) -> None:
        """Room for one more session on this host (every worker's sessions, open or
        resumable, from the registry): globally (1013) and for this credential (1008)."""
        total, held = await self.registry.live(
            live_since=self._live_since, credential=credential.id
        )
        opening = self._opening_credentials  # this one included
        total += len(opening) - 1
        held += sum(c == credential.id for c in opening) - 1
        if max(total, len(self.streams) + len(opening) - 1) >= self.config.max_sessions:
            raise ProtocolError(
                "overloaded",
                f"server is at its limit of {self.config.max_sessions} sessions; retry later",
                proto.CLOSE_OVERLOADED,
            )
        if held >= self.config.max_sessions_per_credential:
            raise ProtocolError(
                "quota_exceeded",
                f"this credential holds {held} sessions, its limit; close one (CloseStream) "
                "or let a disconnected one expire first",
                proto.CLOSE_POLICY,
            )

    async def _resumable(self, params: ListenParams, credential: Credential) -> Stream:
        """The stream a resume names, if every check passes; one uniform refusal otherwise.

        The registry decides, whichever process opened the session: a stream this process
        still holds is continued in memory; one another process held (it crashed, restarted,
        or is another worker) is claimed and continued from its durable watermark.
        """
        row = await self.registry.find(params.session_id or "", live_since=self._live_since)
        offered = digest(params.resume_token or "")
        # Every comparison runs whether or not the session exists (no timing tells).
        ok = same_digest(row.credential if row else "", credential.id)
        ok &= same_digest(row.resume_digest if row else _NO_SESSION_DIGEST, offered)
        ok &= row is not None and row.device_id == params.device_id
        if not ok or row is None:
            raise ProtocolError("resume_refused", RESUME_REFUSED, proto.CLOSE_POLICY)
        if (row.encoding, row.sample_rate) != (params.encoding, params.sample_rate):
            raise ProtocolError(
                "format_mismatch",
                f"session {params.session_id} streams {row.encoding} at "
                f"{row.sample_rate} Hz; resume it with the same encoding and sample_rate",
            )
        stream = self.streams.get(row.session_id)
        if stream is not None and row.owner == self.registry.owner:
            if stream.finishing or row.epoch != stream.owner_epoch:
                raise ProtocolError("resume_refused", RESUME_REFUSED, proto.CLOSE_POLICY)
            return stream
        if stream is not None:  # another process took it over since: this copy is stale
            await self._let_go(stream)
        if params.compressed and not await asyncio.to_thread(
            load_decoder_priming, self.priming_dir, row.session_id
        ):  # no saved header: no decoder here can continue the stream
            raise ProtocolError("resume_refused", RESUME_REFUSED, proto.CLOSE_POLICY)
        if len(self.streams) >= self.config.max_sessions:
            raise ProtocolError(
                "overloaded",
                f"server is at its limit of {self.config.max_sessions} sessions; retry later",
                proto.CLOSE_OVERLOADED,
            )
        claimed = await self.registry.claim(row, time.time())
        if claimed is None:
            raise ProtocolError("resume_refused", RESUME_REFUSED, proto.CLOSE_POLICY)
        stream = self._taken_over(claimed, params)
        await self._choose_classifier(stream)
        return stream

    def _new_stream(self, session: Session) -> Stream:
        stream = Stream(
            session,
            self.config.max_spool_queue_bytes,
            AudioBucket(self.config.rate_audio_s_per_s, self.config.rate_burst_audio_s),
        )
        stream.spool_room.set()
        self.streams[session.session_id] = stream
        return stream

    def _taken_over(self, row: SessionRow, params: ListenParams) -> Stream:
        """A session another process served, continued here from what the registry says.

        Chunks up to ``durable_seq`` are stored in that process's spool. A client resuming
        from its last Ack re-sends those after it: they are stored again and acknowledged,
        and the sidecar lands the same seq with the same bytes once (other bytes go to the
        dead letters), so nothing acknowledged is ever dropped, nor landed twice.
        """
        durable_next = row.durable_seq + 1
        first = (
            durable_next if params.resume_from is None else min(params.resume_from, durable_next)
        )
        session = Session(
            row.session_id,
            params,
            credential=row.credential,
            resume_digest=row.resume_digest,
            max_pending_ms=self.config.max_pending_ms,
            max_utterance_ms=self.config.max_utterance_ms,
            first_seq=first,
            first_utterance=row.utterances,
        )
        session.created_at = row.created_at
        stream = self._new_stream(session)
        stream.owner_epoch = row.epoch
        stream.results_spooled = row.results
        self.metrics.sessions_taken_over += 1
        return stream

    async def _attach(
        self, ws: ServerConnection, params: ListenParams, credential: Credential
    ) -> tuple[Stream, str | None]:
        """The stream this connection feeds and, for a new session, its resume secret."""
        resume_token = None
        if params.session_id is not None:
            stream = await self._resumable(params, credential)
            if stream.parking is not None:
                await asyncio.gather(stream.parking, return_exceptions=True)
                if stream.finishing:
                    raise ProtocolError("resume_refused", RESUME_REFUSED, proto.CLOSE_POLICY)
            stale = stream.detach(time.monotonic())  # the device reconnected: old link is dead
            if stale is not None:
                spawn(stale.close(proto.CLOSE_GOING_AWAY, "session resumed on a new connection"))
            stream.spool_failed = False
            stream.session.ensure_buffers()
        else:
            # Sessions being opened here are not in the registry yet: the quotas count them.
            self._opening_credentials.append(credential.id)
            try:
                await self._check_quotas(credential)
                resume_token = new_resume_token()
                stream = await self._open_session(params, credential, resume_token)
            finally:
                self._opening_credentials.remove(credential.id)
            await self._choose_classifier(stream)
        if stream.spool_writer is None or stream.spool_writer.done():
            stream.spool_writer = asyncio.create_task(
                spool_loop(stream, self.spool, self.metrics, self.registry)
            )
        stream.session.resume(params.resume_from)
        stream.session.last_activity = time.monotonic()
        stream.attach(ws, self.config.outbox_limit, self.config.ack_interval_ms / 1000)
        return stream, resume_token

    async def _open_session(
        self, params: ListenParams, credential: Credential, resume_token: str
    ) -> Stream:
        """A new session, recorded in the host's registry before its first Metadata."""
        session = Session(
            new_session_id(),
            params,
            credential=credential.id,
            resume_digest=digest(resume_token),
            max_pending_ms=self.config.max_pending_ms,
            max_utterance_ms=self.config.max_utterance_ms,
        )
        await self.registry.register(
            SessionRow(
                session_id=session.session_id,
                credential=session.credential,
                resume_digest=session.resume_digest,
                device_id=session.device_id,
                encoding=params.encoding,
                sample_rate=params.sample_rate,
                created_at=session.created_at,
                last_seen=time.time(),
                durable_seq=-1,
                utterances=0,
                results=0,
                owner=self.registry.owner,
                epoch=0,
            )
        )
        return self._new_stream(session)

    def _metadata(
        self, stream: Stream, *, resumed: bool, resume_token: str | None = None
    ) -> dict[str, Any]:
        session, params = stream.session, stream.session.params
        loaded = self.processor.model_loaded
        served_version = self._served_version(stream) if loaded else None
        message: dict[str, Any] = {
            "type": "Metadata",
            "request_id": stream.request_id,
            "transaction_key": "deprecated",
            "sha256": stream.audio_sha256.hexdigest(),
            "created": datetime.fromtimestamp(session.created_at, UTC).isoformat(),
            "duration": round(session.totals.audio_ms / 1000, 3),
            "session_id": session.session_id,
            **({"resume_token": resume_token} if resume_token else {}),
            "device_id": session.device_id,
            "device_source": params.device_source,
            "model": params.model,
            "vad_events": params.vad_events,
            "utterance_end_ms": params.utterance_end_ms,
            "model_loaded": loaded,
            "model_version": served_version,
            "model_role": self._served_role(stream),
            "encoding": params.encoding,
            "sample_rate": params.sample_rate,
            "channels": params.channels,
            "processing_sample_rate": SAMPLE_RATE_HZ,
            "interim_results": params.interim_results,
            "endpointing_ms": params.endpointing_ms,
            "resumed": resumed,
            "worker": self.config.worker,
            "next_seq": session.next_seq,
            "durable_seq": session.durable_seq,
        }
        if not loaded:
            message["note"] = "no model is loaded: results mark speech segments without labels"
        return message

    # ---- one connection --------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        try:
            params, credential = self._admit(ws)
            stream, resume_token = await self._attach(ws, params, credential)
        except ProtocolError as error:
            await self._refuse(ws, error)
            return
        sender = stream.sender
        self._connections.add(ws)
        self.metrics.sessions_opened += 1
        stream.send(self._metadata(stream, resumed=resume_token is None, resume_token=resume_token))
        loaded = self.processor.model_loaded
        champion = self._champion_version() if loaded else None
        served = self._served_version(stream) if loaded else None
        warnings = proto.connection_warnings(params, champion, served, self._served_role(stream))
        for warning in warnings:
            stream.send(warning)
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
                stream.parking = asyncio.create_task(self._park(stream))
            if sender is not None:
                sender.cancel()

    async def _park(self, stream: Stream) -> None:
        """The client left without CloseStream: keep only what a resume needs."""
        await self.processor.drain(stream, end_of_stream=False)
        if stream.ws is None and not stream.finishing:
            self.processor.release(stream)
            stream.session.free_buffers()

    async def _receive(self, stream: Stream, ws: ServerConnection) -> None:
        session = stream.session
        async for message in ws:
            if stream.ws is not ws:
                return  # idled out, or taken over by a resumed connection
            if isinstance(message, bytes):
                if not await self._on_audio(stream, ws, message):
                    return
                continue
            try:
                command = proto.parse_client_message(message)
            except ProtocolError as error:
                # Only valid audio or KeepAlive keeps a connection alive, and a bad message is
                # logged once per session (one line), never with a traceback.
                self.metrics.client_errors[error.code] += 1
                if not stream.logged_bad_message:
                    stream.logged_bad_message = True
                    log.info("session %s: %s (%s)", session.session_id, error.code, error.message)
                stream.send(proto.error_message(error.code, error.message))
                continue
            if command.type == "KeepAlive":
                session.last_activity = time.monotonic()
            elif command.type == "Label":
                session.label = command.label
            elif command.type == "Finalize":
                await self.processor.drain(stream, end_of_stream=False)
                self.processor.end_utterance(stream, "finalize")
            elif command.type == "CloseStream":
                await self._finish(stream, reason="close_stream", close_code=proto.CLOSE_NORMAL)
                return

    async def _on_audio(self, stream: Stream, ws: ServerConnection, frame: bytes) -> bool:
        """Accept one audio frame; False when the frame ended the connection.

        A compressed frame is decoded first; its seq is acknowledged once the PCM it
        completed is durable, or at once when it completed none yet (a header, part of a page).
        """
        session = stream.session
        if stream.spool_failed:  # the 1011 close is on its way: end only once it is sent
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 10.0)
            return False
        if stream.finishing:
            return False
        if not stream.format_known:
            stream.format_known = True
            try:
                stream.decoder = self._open_decoder(stream, frame)
            except DecodeError as error:
                await self._bad_stream(stream, str(error))
                return False
            if stream.decoder is not None:
                stream.received_container = stream.decoder.container
                params = session.params
                stream.received_encoding = params.encoding if params.compressed else None
        pcm, received = frame, None
        if stream.decoder is not None:
            received, pcm = frame, b""  # a resent frame (a duplicate below) is not decoded
            if session.next_seq > session.accepted_high:
                try:
                    pcm = stream.decoder.feed(frame)  # empty: a header or part of a packet
                except DecodeError as error:
                    await self._bad_stream(stream, str(error))
                    return False
                if stream.priming is None and stream.decoder.header is not None:
                    await self._save_priming(stream)
        bytes_per_sample = session.params.bytes_per_sample
        if received is None and (not pcm or len(pcm) % bytes_per_sample):
            await self._refuse(
                ws,
                ProtocolError(
                    "bad_frame",
                    f"audio frame of {len(pcm)} bytes is not a whole number of "
                    f"{session.params.encoding} samples ({bytes_per_sample} bytes each)",
                ),
            )
            return False
        samples = len(pcm) // bytes_per_sample
        rate = session.params.sample_rate
        session.last_activity = time.monotonic()  # valid audio: the connection is alive
        wait_s = stream.bucket.take(samples / rate)
        if wait_s > 0:  # over the audio rate limit: stop reading this socket for a while
            self.metrics.rate_limited_frames += 1
            self.metrics.rate_limited_seconds += wait_s
            await asyncio.sleep(wait_s)
            if stream.ws is not ws or stream.finishing:
                return False
        session.last_activity = time.monotonic()
        seq, duplicate = session.assign_seq()
        if duplicate:  # sent again after a resume: stored and processed once already
            self.metrics.duplicate_chunks += 1
            stream.want_ack()
            return True
        stream.audio_sha256.update(frame)
        self._accept_pcm(stream, seq, pcm, received)
        if not stream.spool_room.is_set():
            await stream.spool_room.wait()  # the spool is behind: stop reading this socket
        return True

    def _open_decoder(self, stream: Stream, first_frame: bytes) -> StreamDecoder | None:
        """The decoder a stream needs, judged on the first frame this process sees of it.

        A session that already holds chunks resumes mid-stream: its saved priming (the
        container header, :mod:`streaming.spool.priming`) primes a fresh decoder, which
        the client is told about (audio of the unit cut by the resume point is not decoded).
        """
        session, params = stream.session, stream.session.params
        if session.accepted_high >= 0:
            priming = load_decoder_priming(self.priming_dir, session.session_id)
            if priming is not None:
                stream.priming = priming
                stream.send(
                    proto.warning_message(
                        "decoder_restarted",
                        f"the {priming.container} stream resumed on a new decoder: it decodes "
                        "from the first page, frame or block that starts in the resumed audio",
                    )
                )
                return StreamDecoder.resuming(params.sample_rate, priming.container, priming.header)
        return open_decoder(params.encoding, params.encoding_given, params.sample_rate, first_frame)

    async def _save_priming(self, stream: Stream) -> None:
        """The stream's header is complete: keep it durably before the chunk that completed
        it can be acknowledged, so another process can resume the session."""
        session, decoder = stream.session, stream.decoder
        assert decoder is not None and decoder.header is not None and decoder.container
        stream.priming = DecoderPriming(
            session_id=session.session_id,
            device_id=session.device_id,
            container=decoder.container,
            encoding=stream.received_encoding,
            header=decoder.header,
        )
        await asyncio.to_thread(save_decoder_priming, self.priming_dir, stream.priming)

    async def _bad_stream(self, stream: Stream, why: str) -> None:
        """Undecodable compressed audio: Error ``bad_frame``, then end the session (1003)."""
        self.metrics.client_errors["bad_frame"] += 1
        stream.decoder = None
        stream.send(proto.error_message("bad_frame", why))
        await self._finish(stream, reason="bad_frame", close_code=proto.CLOSE_BAD_DATA)

    def _flush_decoder(self, stream: Stream) -> bool:
        """End of a compressed stream: store and queue the PCM the decoder still held.

        False when the stream's end showed it undecodable (truncated): an Error was sent.
        """
        decoder, stream.decoder = stream.decoder, None
        if decoder is None:
            return True
        try:
            tail = decoder.close()
        except DecodeError as error:
            self.metrics.client_errors["bad_frame"] += 1
            stream.send(proto.error_message("bad_frame", str(error)))
            return False
        if tail:  # PCM no frame of the client's completed: nothing was received for it
            seq, _ = stream.session.assign_seq()
            self._accept_pcm(stream, seq, tail, b"")
        return True

    def _accept_pcm(self, stream: Stream, seq: int, pcm: bytes, received: bytes | None) -> None:
        """Queue one chunk for the spool and the VAD: its PCM (as received, or decoded) and,
        for a compressed stream, the bytes the client sent (``received``; None for raw PCM,
        whose ``pcm`` is what was received)."""
        session = stream.session
        bytes_per_sample = session.params.bytes_per_sample
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
            encoding=session.params.pcm_encoding,
            pcm=pcm,
            label=session.label,
            received_at=received_at,
            received=received,
            received_encoding=stream.received_encoding,
            received_container=stream.received_container,
        )
        stream.queue_for_spool(record, time.perf_counter())
        stream.note_label(seq, session.label)
        self.metrics.chunks += 1
        if not pcm:  # a compressed frame that completed no audio yet: stored, not processed
            session.totals.chunks += 1
            return
        dropped = session.feed(seq, pcm)
        if dropped:
            self._report_drops(stream, dropped)
        self.processor.audio_arrived(stream)

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
        if not self._flush_decoder(stream):
            close_code, reason = proto.CLOSE_BAD_DATA, "bad_frame"
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
        model_version = self._served_version(stream) if self.processor.model_loaded else None
        totals = {
            **session.totals.as_dict(),
            "model_version": model_version,
            "closed_reason": reason,
            "last_seq": session.accepted_high,
            "durable_seq": session.durable_seq,
        }
        owned = False
        try:
            # Only the process that still serves the session ends it (a resume another
            # worker accepted has moved it there).
            owned = await self.registry.end(session.session_id, stream.owner_epoch)
        except Exception:
            log.exception("could not end %s in the session registry", session.session_id)
        try:
            if owned:
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
        if owned and stream.priming is not None:  # the stream will not resume: its header can go
            await asyncio.to_thread(drop_decoder_priming, self.priming_dir, session.session_id)
        session.closed = True
        self.processor.release(stream)
        self.streams.pop(session.session_id, None)
        ws, outbox = stream.ws, stream.outbox
        if ws is None or outbox is None:
            return
        stream.want_ack()
        await outbox.flush()  # results and the last Ack go out before the closing Metadata
        closing = self._metadata(stream, resumed=False)
        closing.update({"final": True, "closed_reason": reason, "totals": totals})
        outbox.put(closing)
        await outbox.flush()
        with contextlib.suppress(ConnectionClosed):
            await ws.close(close_code or proto.CLOSE_NORMAL, reason)

    async def _let_go(self, stream: Stream) -> None:
        """Another process serves this session now: stop here without ending it.

        What was accepted is still written (nothing accepted is dropped); the connection,
        if one is still attached, is closed with 1001 like any connection a resume replaced.
        """
        if stream.finishing:
            await stream.finished.wait()
            return
        stream.finishing = True
        try:
            if stream.parking is not None:
                await asyncio.gather(stream.parking, return_exceptions=True)
            ws = stream.detach(time.monotonic())
            if ws is not None:
                spawn(ws.close(proto.CLOSE_GOING_AWAY, "session resumed on a new connection"))
            stream.spool_closing = True
            stream.spool_wakeup.set()
            if stream.spool_writer is not None:
                await asyncio.gather(stream.spool_writer, return_exceptions=True)
            stream.session.closed = True
            self.processor.release(stream)
            if self.streams.get(stream.session.session_id) is stream:
                del self.streams[stream.session.session_id]
            self.metrics.sessions_moved += 1
        finally:
            stream.finished.set()

    async def _heartbeat_loop(self) -> None:
        """Keep connected sessions alive in the registry, let go of the ones another
        process took over, and end (for the whole host) those nobody resumed in time."""
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            held = [
                (sid, s.owner_epoch)
                for sid, s in list(self.streams.items())
                if s.ws is not None and not s.finishing
            ]
            try:
                lost = await self.registry.heartbeat(held, time.time())
                await self.registry.expire(live_since=self._live_since, now=time.time())
                await self._publish()
            except Exception:
                log.exception("session registry heartbeat failed")
                continue
            for session_id in lost:
                stream = self.streams.get(session_id)
                if stream is not None:
                    spawn(self._let_go(stream))

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
