"""A live stream: one :class:`~streaming.gateway.session.Session` plus its asyncio plumbing.

The session (pure state) survives reconnects; the connection, its outbox and sender task are
swapped when a device resumes. Spool writes and result jobs belong to the stream, not to the
connection, so a dropped connection never cancels the write of a chunk it already sent.

Each stream hands its queued chunks to the :class:`~streaming.spool.SpoolWriter` in order,
one group commit in flight at a time (:mod:`streaming.gateway.spooling`); chunks that queue up
meanwhile go in the next group commit together. The chunks a stream holds for the spool
(queued plus in flight) are bounded in bytes: at ``spool_limit_bytes`` the receive loop stops
reading the socket until a write completes.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.server import ServerConnection

from streaming.gateway import assemblyai
from streaming.gateway import protocol as proto
from streaming.gateway.outbox import Outbox, spawn
from streaming.gateway.quota import AudioBucket
from streaming.gateway.registry import Durable
from streaming.gateway.session import Session
from streaming.spool import SpoolRecord
from streaming.spool.priming import DecoderPriming
from streaming.vad import WINDOW_SAMPLES

WINDOW_LOG = 400
"""Scored windows remembered per stream (12.8 s): longer than any utterance (10 s cap)."""


@dataclass(eq=False)
class Stream:
    """A session and, while a client is connected, its connection and outbox."""

    session: Session
    spool_limit_bytes: int
    """Audio bytes held for the spool (queued + in flight) before the receive loop pauses."""
    bucket: AudioBucket
    """The audio rate limit of this session (audio-seconds per second)."""
    epoch: datetime | None = None
    """UTC capture time of the stream's first sample (event_time of its first chunk)."""
    input_samples: int = 0
    """Samples (at the client's rate) accepted so far: the next chunk's offset from epoch."""
    ws: ServerConnection | None = None
    outbox: Outbox | None = None
    sender: asyncio.Task[None] | None = None
    spool_queue: deque[tuple[SpoolRecord, float]] = field(default_factory=deque)
    """Accepted chunks not yet handed to the spool writer, with their arrival time."""
    spool_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    spool_room: asyncio.Event = field(default_factory=asyncio.Event)
    spool_writer: asyncio.Task[None] | None = None
    """Runs while the stream is connected to the spool (see ``spooling.spool_loop``)."""
    spool_sink: Callable[[], None] | None = None
    """Hands the queue to the spool writer (unless a write is in flight); set by spool_loop."""
    spool_in_flight: int = 0
    spool_queued_bytes: int = 0
    spool_in_flight_bytes: int = 0
    spool_failed: bool = False
    """A spool write failed: the connection is being closed (1011); a resume clears it."""
    logged_bad_message: bool = False
    """A malformed message from this client was logged (once per session, one line)."""
    parking: asyncio.Task[None] | None = None
    """Freeing the buffers of a stream whose client left (a resume waits for it)."""
    last_result: asyncio.Task[None] | None = None
    """The newest result job; each job waits for the one before it, so results stay in order."""
    drain_requests: list[tuple[bool, asyncio.Future[None]]] = field(default_factory=list)
    """(end of stream?, future) asks for the VAD loop to score everything pending now."""
    detached_at: float | None = None
    owner_epoch: int = 0
    """The session's registry epoch when this process took it (a later one: it moved on)."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Deepgram's ``request_id``: one per session, in its Metadata and every Results."""
    audio_sha256: Any = field(default_factory=hashlib.sha256)
    """SHA-256 of the audio bytes accepted so far, as received (Deepgram's ``sha256``)."""
    decoder: Any = None
    """The :class:`~streaming.gateway.decode.StreamDecoder` of a compressed stream, else None."""
    format_known: bool = False
    """True once the first frame has told whether the stream needs a decoder."""
    received_encoding: str | None = None
    """A compressed stream's declared ``encoding`` (``opus``, ``flac``; None: a bare container)."""
    received_container: str | None = None
    """A compressed stream's container (``ogg``, ``matroska``, ``flac``, ``wav``), else None."""
    priming: DecoderPriming | None = None
    """The header a fresh decoder needs, once saved durably (or loaded, on a resume)."""
    finishing: bool = False
    spool_closing: bool = False
    """Set once the last decision is queued: the spool writer may end when its queue is empty."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    window_log: deque[tuple[int, float, int]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_LOG)
    )
    """(window start sample, speech probability, seq) of the latest scored windows."""
    results_spooled: int = 0
    classifier: Any = None
    """The challenger's engine when the client asked for it (``model=challenger``); None: the
    champion serves (and the challenger, if any, shadow-scores the session)."""
    label_changes: list[tuple[int, str | None]] = field(default_factory=list)
    """(first seq, label): the client's ``Label`` as it applied to the chunks, from each seq on."""

    def note_label(self, seq: int, label: str | None) -> None:
        """Record the label a stored chunk carries (only changes are kept: a few per clip)."""
        if not self.label_changes or self.label_changes[-1][1] != label:
            self.label_changes.append((seq, label))

    def label_at(self, seq: int) -> str | None:
        """The label the chunk ``seq`` carries: the one decision-records take, not whatever
        ``Label`` the client has sent since (an unpaced client is clips ahead of its results)."""
        index = bisect.bisect_right(self.label_changes, seq, key=lambda change: change[0])
        return self.label_changes[index - 1][1] if index else None

    def attach(self, ws: ServerConnection, outbox_limit: int, ack_interval_s: float) -> None:
        self.ws = ws
        self.detached_at = None
        translate = assemblyai.translate if self.session.params.dialect == "assemblyai" else None
        self.outbox = Outbox(ws, outbox_limit, ack_interval_s, translate)
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

    def queue_for_spool(self, record: SpoolRecord, received_s: float) -> None:
        self.spool_queue.append((record, received_s))
        self.spool_queued_bytes += len(record.pcm) + len(record.received or b"")
        if self.spool_sink is not None:
            self.spool_sink()
        self.check_spool_room()

    def check_spool_room(self) -> None:
        if self.spool_pending_bytes >= self.spool_limit_bytes:
            self.spool_room.clear()
        else:
            self.spool_room.set()

    @property
    def spool_pending(self) -> int:
        return len(self.spool_queue) + self.spool_in_flight

    @property
    def spool_pending_bytes(self) -> int:
        return self.spool_queued_bytes + self.spool_in_flight_bytes

    def spool_result(
        self,
        message: dict[str, Any],
        *,
        start_sample: int,
        end_sample: int,
        reason: str,
        latency_ms: float,
        threshold_on: float,
    ) -> None:
        """Spool the decision behind a ``Results`` just sent (see :mod:`streaming.spool`).

        A final result becomes an ``utterance`` record: the utterance's span, the chunks it
        spans (from the window log: the chunk holding the sample before its start, to the
        last chunk scored), its speech ratio and end reason, and the final result itself.
        """
        session = self.session
        final = bool(message["is_final"])
        fields: dict[str, Any] = {}
        if final:
            windows = [(w, p, q) for w, p, q in self.window_log if start_sample <= w < end_sample]
            before = [q for w, _, q in self.window_log if w < start_sample]
            fields = {
                "first_seq": before[-1] if before else (windows[0][2] if windows else 0),
                "last_seq": message["last_seq"],
                "speech_ratio": (
                    sum(p >= threshold_on for _, p, _ in windows) / len(windows) if windows else 0.0
                ),
                "end_reason": reason,
            }
        epoch = self.epoch or datetime.now(UTC)
        record = SpoolRecord.decision(
            final=final,
            session_id=session.session_id,
            device_id=session.device_id,
            event_time=epoch + timedelta(microseconds=start_sample * 1_000_000 // 16_000),
            sample_rate=session.params.sample_rate,
            encoding=session.params.encoding,
            label=self.label_at(message["last_seq"]),
            utterance=message["utterance"],
            result_index=self.results_spooled,
            speech_final=message["speech_final"],
            start_sample=start_sample,
            end_sample=end_sample,
            predicted_label=message["label"],
            score=message["score"],
            top_k=message["alternatives"],
            model_version=message["model_version"],
            role="champion",
            latency_ms=round(latency_ms, 3),
            **fields,
        )
        self.results_spooled += 1
        self.queue_for_spool(record, time.perf_counter())

    def log_window(self, window_end: int, probability: float, seq: int) -> None:
        self.window_log.append((window_end - WINDOW_SAMPLES, probability, seq))

    def durable_mark(self, at: float) -> Durable:
        """What the registry records once a group commit is fsync'd (Unix time ``at``)."""
        session = self.session
        return Durable(session.durable_seq, session.utterance_count, self.results_spooled, at)

    def want_ack(self) -> None:
        if self.outbox is not None and self.session.durable_seq >= 0:
            self.outbox.want_ack(self.session.durable_seq)
