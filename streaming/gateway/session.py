"""Per-session state: sequence numbers, the bounded audio buffer, VAD slot, utterance audio.

A :class:`Session` outlives one connection: a client that reconnects with its ``session_id``,
``resume_token`` (and ``resume_from``) continues the same sequence numbers. While no client is
connected the session keeps only what a resume needs (:meth:`Session.free_buffers`). Nothing
here does I/O; the gateway feeds chunks in, takes 512-sample windows out for the batched VAD,
and turns endpoint events into messages. Units: samples of the 16 kHz stream clock unless a
name says otherwise.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.pcm import SAMPLE_RATE_HZ, StreamResampler, decode, to_float
from features.window import UTTERANCE_PRE_ROLL_MS, UTTERANCE_TAIL_MS
from streaming.endpointing import Endpointer, EndpointEvent
from streaming.gateway.protocol import ListenParams
from streaming.vad import WINDOW_SAMPLES


@dataclass
class SessionTotals:
    """Counters reported in the closing Metadata and the ``session_end`` spool record."""

    chunks: int = 0
    duplicate_chunks: int = 0
    dropped_chunks: int = 0
    dropped_ms: float = 0.0
    audio_ms: float = 0.0
    utterances: int = 0
    interim_results: int = 0
    final_results: int = 0
    connections: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "duplicate_chunks": self.duplicate_chunks,
            "dropped_chunks": self.dropped_chunks,
            "dropped_ms": round(self.dropped_ms, 1),
            "audio_ms": round(self.audio_ms, 1),
            "utterances": self.utterances,
            "interim_results": self.interim_results,
            "final_results": self.final_results,
            "connections": self.connections,
        }


@dataclass
class Utterance:
    """The open utterance: its index, start, audio so far and the interim bookkeeping."""

    index: int
    start_sample: int
    audio_start_sample: int
    audio: list[np.ndarray] = field(default_factory=list)
    last_interim_sample: int = 0
    interim_in_flight: bool = False

    def samples(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, dtype=np.float32)


@dataclass
class Closed:
    """A finished utterance ready for its final result."""

    index: int
    start_sample: int
    end_sample: int
    audio: np.ndarray
    last_seq: int
    reason: str


class Session:
    """Everything the gateway knows about one stream."""

    def __init__(
        self,
        session_id: str,
        params: ListenParams,
        *,
        credential: str,
        resume_digest: str,
        max_pending_ms: int,
        max_utterance_ms: int,
        first_seq: int = 0,
        first_utterance: int = 0,
    ) -> None:
        self.session_id = session_id
        self.params = params
        self.credential = credential
        """Digest of the token that opened the session (or ``anonymous``): resumes must match."""
        self.resume_digest = resume_digest
        """Digest of the resume secret sent in the first Metadata (the secret is not kept)."""
        self.device_id = params.device_id
        self.vad_slot: int | None = None
        """Slot in the batched VAD's state pool, given and taken back by the VAD loop only."""
        self.created_at = time.time()
        self.next_seq = first_seq
        self.accepted_high = first_seq - 1
        """Highest seq accepted (stored) in this gateway's lifetime; at or below is a duplicate."""
        self.durable_seq = first_seq - 1
        """Highest seq such that it and every accepted seq before it are durable."""
        self._inflight_seqs: set[int] = set()
        self.label: str | None = None
        self.totals = SessionTotals()
        self.closed = False
        self.last_activity = time.monotonic()

        self._resampler = StreamResampler(params.sample_rate, SAMPLE_RATE_HZ)
        self._direct = params.pcm_encoding == "linear16" and params.sample_rate == SAMPLE_RATE_HZ
        self._max_pending = max_pending_ms * SAMPLE_RATE_HZ // 1000
        self._buffer = np.zeros(self._max_pending + 4 * SAMPLE_RATE_HZ, dtype=np.float32)
        """Unprocessed 16 kHz audio lives in ``_buffer[_head:_tail]``; compacted when full."""
        self._head = 0
        self._tail = 0
        self._pending_chunks: collections.deque[tuple[int, int, int]] = collections.deque()
        """(start sample, end sample, seq) of the chunks whose audio is in the pending buffer."""
        self.processed = 0
        """Stream-clock position of the first pending sample (end of the last window taken)."""
        self.scored_end = 0
        """Stream-clock end of the last window the endpointer has seen."""
        self.last_seq_processed = first_seq - 1
        self.endpointer = Endpointer(params.endpointing_ms, max_utterance_ms=max_utterance_ms)
        history_windows = -(-UTTERANCE_PRE_ROLL_MS * SAMPLE_RATE_HZ // 1000 // WINDOW_SAMPLES) + 4
        self._history: collections.deque[np.ndarray] = collections.deque(maxlen=history_windows)
        """The last scored windows (pre-roll and the windows that confirmed speech)."""
        self.utterance: Utterance | None = None
        self._utterance_count = first_utterance
        """Utterances opened so far (continued from the registry when another process
        served the session before: utterance numbers are never reused)."""
        self.drops_unreported = 0
        self.last_warning_at = 0.0

    # ---- sequence numbers and durability -------------------------------------------------
    def assign_seq(self) -> tuple[int, bool]:
        """Next seq for an incoming frame and whether it is a duplicate of an accepted one."""
        seq = self.next_seq
        self.next_seq += 1
        duplicate = seq <= self.accepted_high
        if duplicate:
            self.totals.duplicate_chunks += 1
        else:
            self.accepted_high = seq
            self._inflight_seqs.add(seq)
        return seq, duplicate

    def resume(self, resume_from: int | None) -> None:
        """Continue at ``resume_from`` (default: where the stream stopped)."""
        self.next_seq = self.next_seq if resume_from is None else resume_from
        self.totals.connections += 1

    def mark_durable(self, seq: int) -> bool:
        """Record that ``seq`` is fsync'd; True when the acknowledged watermark moved.

        The watermark is the highest seq below every write still in flight: an Ack for it
        promises that every chunk the client sent up to it is durable.
        """
        self._inflight_seqs.discard(seq)
        watermark = min(self._inflight_seqs) - 1 if self._inflight_seqs else self.accepted_high
        if watermark > self.durable_seq:
            self.durable_seq = watermark
            return True
        return False

    @property
    def spool_idle(self) -> bool:
        return not self._inflight_seqs

    def forget_unstored(self) -> None:
        """A spool write failed: only durable seqs count as stored from now on.

        The next chunk is numbered ``durable_seq + 1``, so a client that resends everything
        after its last Ack has those chunks stored (not skipped as duplicates).
        """
        self._inflight_seqs.clear()
        self.accepted_high = self.durable_seq
        self.next_seq = self.durable_seq + 1

    # ---- memory while no client is connected ------------------------------------------------
    @property
    def buffer_bytes(self) -> int:
        """Bytes of audio this session holds in memory (pending buffer, utterance, history)."""
        held = self._buffer.nbytes + sum(w.nbytes for w in self._history)
        if self.utterance is not None:
            held += sum(a.nbytes for a in self.utterance.audio)
        return held

    def free_buffers(self) -> None:
        """The client left: drop the open utterance and keep only unscored samples (< 1 window).

        A resumable session then costs a few KiB instead of ~0.4 MiB of buffer plus up to
        10 s of utterance audio; :meth:`ensure_buffers` re-allocates on resume.
        """
        self.force_end("disconnect")
        self._history.clear()
        self._buffer = self._buffer[self._head : self._tail].copy()
        self._head, self._tail = 0, self._buffer.size

    def ensure_buffers(self) -> None:
        size = self._max_pending + 4 * SAMPLE_RATE_HZ
        if self._buffer.size < size:
            grown = np.zeros(size, dtype=np.float32)
            live = self._tail - self._head
            grown[:live] = self._buffer[self._head : self._tail]
            self._buffer, self._head, self._tail = grown, 0, live

    # ---- audio in -------------------------------------------------------------------------
    def feed(self, seq: int, pcm: bytes) -> int:
        """Decode, resample and queue a chunk; return how many chunks were dropped for room."""
        params = self.params
        samples = decode(pcm, params.pcm_encoding)
        self.totals.chunks += 1
        self.totals.audio_ms += 1000.0 * samples.size / params.sample_rate
        if self._direct:
            # 16 kHz PCM16, the common case: scale straight into the buffer, no temporaries.
            start = self.processed + self.pending_samples
            target = self._reserve(samples.size)
            np.multiply(samples, np.float32(1 / 32768), out=target, dtype=np.float32)
            self._pending_chunks.append((start, start + samples.size, seq))
            return self._drop_overflow()
        return self._queue(self._resampler.process(to_float(samples)), seq)

    def flush_resampler(self) -> None:
        """Push the resampler's tail (end of stream) into the pending buffer."""
        tail = self._resampler.flush()
        if tail.size:
            self._queue(tail, self.last_queued_seq)

    @property
    def last_queued_seq(self) -> int:
        return self._pending_chunks[-1][2] if self._pending_chunks else self.last_seq_processed

    @property
    def pending_samples(self) -> int:
        return self._tail - self._head

    def _append(self, audio: np.ndarray) -> None:
        self._reserve(audio.size)[:] = audio

    def _reserve(self, size: int) -> np.ndarray:
        """Room for ``size`` more samples at the tail (compacting or growing the buffer)."""
        if self._tail + size > self._buffer.size:
            live = self._tail - self._head
            if live + size > self._buffer.size:
                grown = np.zeros(max(2 * self._buffer.size, live + size), dtype=np.float32)
                grown[:live] = self._buffer[self._head : self._tail]
                self._buffer = grown
            else:
                self._buffer[:live] = self._buffer[self._head : self._tail]
            self._head, self._tail = 0, live
        self._tail += size
        return self._buffer[self._tail - size : self._tail]

    def _queue(self, audio: np.ndarray, seq: int) -> int:
        start = self.processed + self.pending_samples
        if audio.size:
            self._append(audio)
            self._pending_chunks.append((start, start + audio.size, seq))
        return self._drop_overflow()

    def _drop_overflow(self) -> int:
        overflow = self.pending_samples - self._max_pending
        if overflow <= 0:
            return 0
        # Fall-behind policy: drop the OLDEST unprocessed audio, whole chunks at a time.
        dropped = 0
        drop_to = self.processed + overflow
        while self._pending_chunks and self._pending_chunks[0][0] < drop_to:
            _chunk_start, chunk_end, _seq = self._pending_chunks.popleft()
            drop_to = max(drop_to, chunk_end)
            dropped += 1
        cut = drop_to - self.processed
        self._head += cut
        self.processed = drop_to
        self.totals.dropped_chunks += dropped
        self.totals.dropped_ms += 1000.0 * cut / SAMPLE_RATE_HZ
        self.drops_unreported += dropped
        return dropped

    @property
    def windows_ready(self) -> int:
        return (self._tail - self._head) // WINDOW_SAMPLES

    def pad_to_window(self) -> None:
        """Zero-pad a partial last window (end of stream) so it can be scored."""
        partial = self.pending_samples % WINDOW_SAMPLES
        if partial:
            self._append(np.zeros(WINDOW_SAMPLES - partial, dtype=np.float32))

    def take_windows(self, limit: int | None = None) -> list[tuple[np.ndarray, int, int]]:
        """The next whole 512-sample windows as (window, stream-clock end, seq of its chunk).

        The seq is that of the chunk holding the window's last sample: the newest audio a
        result computed at this window covers.
        """
        count = self.windows_ready if limit is None else min(limit, self.windows_ready)
        out = []
        chunks = self._pending_chunks
        for _ in range(count):
            window = self._buffer[self._head : self._head + WINDOW_SAMPLES].copy()
            self._head += WINDOW_SAMPLES
            self.processed += WINDOW_SAMPLES
            while chunks and chunks[0][1] < self.processed:
                chunks.popleft()
            seq = chunks[0][2] if chunks and chunks[0][0] < self.processed else self.last_queued_seq
            if chunks and chunks[0][1] == self.processed:
                chunks.popleft()
            out.append((window, self.processed, seq))
        return out

    # ---- endpointing and utterance audio -------------------------------------------------
    def on_window(
        self, window: np.ndarray, probability: float, window_end: int, seq: int
    ) -> tuple[EndpointEvent | None, Closed | None]:
        """Advance the endpointer with a scored window; returns (event, closed utterance)."""
        self.scored_end = window_end
        self.last_seq_processed = seq
        self._history.append(window)
        event = self.endpointer.push(probability, window_end - WINDOW_SAMPLES, window_end)
        if self.utterance is not None:
            self.utterance.audio.append(window)
        if event is None:
            return None, None
        if event.kind == "start":
            self._open_utterance(event.sample)
            return event, None
        return event, self._close_utterance(event)

    def force_end(self, reason: str) -> tuple[EndpointEvent | None, Closed | None]:
        event = self.endpointer.force_end(reason)
        if event is None:
            return None, None
        return event, self._close_utterance(event)

    def _open_utterance(self, start_sample: int) -> None:
        pre_roll = UTTERANCE_PRE_ROLL_MS * SAMPLE_RATE_HZ // 1000
        history = np.concatenate(self._history)
        history_start = self.scored_end - history.size
        audio_start = max(history_start, start_sample - pre_roll)
        seed = history[audio_start - history_start :]
        self._utterance_count += 1
        self.totals.utterances += 1
        self.utterance = Utterance(
            index=self._utterance_count,
            start_sample=start_sample,
            audio_start_sample=audio_start,
            audio=[seed],
            last_interim_sample=start_sample,
        )

    def _close_utterance(self, event: EndpointEvent) -> Closed | None:
        utterance, self.utterance = self.utterance, None
        if utterance is None:
            return None
        tail = UTTERANCE_TAIL_MS * SAMPLE_RATE_HZ // 1000
        audio = utterance.samples()[: max(0, event.sample + tail - utterance.audio_start_sample)]
        return Closed(
            index=utterance.index,
            start_sample=utterance.start_sample,
            end_sample=event.sample,
            audio=audio,
            last_seq=self.last_seq_processed,
            reason=event.reason,
        )

    @property
    def utterance_count(self) -> int:
        return self._utterance_count

    def interim_due(self, interval_samples: int) -> Utterance | None:
        """The open utterance when an interim result is due (and none is being computed)."""
        utterance = self.utterance
        if (
            utterance is None
            or utterance.interim_in_flight
            or self.scored_end - utterance.last_interim_sample < interval_samples
        ):
            return None
        return utterance
