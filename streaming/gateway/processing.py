"""The speech path shared by every session: batched VAD → endpointing → classification.

One loop serves all sessions. It wakes when audio arrives (at most once per ``tick_ms``, so
windows from many sessions pile up into one batch), takes one 512-sample window from each
session that has one, scores the batch in ONE Silero call on a worker thread (the event loop
keeps serving sockets meanwhile), and feeds every session's endpointer. Sessions holding more
than one window go round again. Utterance ends and due interims become result jobs: each
classifies through the serving engine (which micro-batches concurrent callers) and then waits
for the session's previous job, so a session's results leave in order while classifications
of different sessions share batches.

All changes to the VAD's state pool happen on this loop (slots are opened lazily and released
here), so the worker thread never races a slot being reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from features.pcm import SAMPLE_RATE_HZ
from features.window import fit_window
from streaming.gateway import protocol as proto
from streaming.gateway.metrics import GatewayMetrics
from streaming.gateway.results import (
    Classifier,
    Prediction,
    results_message,
    speech_started_message,
    utterance_end_message,
)
from streaming.gateway.session import Closed
from streaming.gateway.shadow import ShadowScorer
from streaming.gateway.stream import Stream
from streaming.vad import BatchedVad

log = logging.getLogger("sonolake.gateway")


class SpeechProcessor:
    """Runs the VAD loop and result jobs for every stream of one gateway."""

    def __init__(
        self,
        vad: BatchedVad,
        engine: Classifier | None,
        metrics: GatewayMetrics,
        *,
        tick_ms: float,
        interim_interval_ms: int,
        top_k: int,
        streams: Callable[[], list[Stream]],
    ) -> None:
        self.vad = vad
        self.engine = engine
        self.metrics = metrics
        self.tick_s = tick_ms / 1000
        self.interim_samples = interim_interval_ms * SAMPLE_RATE_HZ // 1000
        self.interim_interval_s = interim_interval_ms / 1000
        self.top_k = top_k
        self._streams = streams
        self._ready: set[Stream] = set()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        self._released_slots: list[int] = []
        self.shadow: ShadowScorer | None = None
        """Offered every final result of a champion-served stream (see gateway.shadow)."""

    @property
    def model_loaded(self) -> bool:
        return self.engine is not None and bool(self.engine.loaded)

    # ---- inputs from the gateway -----------------------------------------------------------
    def audio_arrived(self, stream: Stream) -> None:
        self._ready.add(stream)
        self._wake.set()

    async def drain(self, stream: Stream, *, end_of_stream: bool) -> None:
        """Score everything pending for ``stream`` now (zero-padded at the end of stream)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stream.drain_requests.append((end_of_stream, future))
        self._wake.set()
        await future

    def release(self, stream: Stream) -> None:
        """The stream has ended: give its VAD slot back (on the loop, between batches)."""
        slot, stream.session.vad_slot = stream.session.vad_slot, None
        if slot is not None:
            self._released_slots.append(slot)
        self._ready.discard(stream)

    def end_utterance(self, stream: Stream, reason: str) -> None:
        """Finalize / CloseStream: close the open utterance now and send its final result."""
        _, closed = stream.session.force_end(reason)
        if closed is not None:
            self._emit_final(stream, closed, speech_final=False)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ---- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._score_all(loop)
            except Exception:
                log.exception("VAD step failed")
            await asyncio.sleep(self.tick_s)

    async def _score_all(self, loop: asyncio.AbstractEventLoop) -> None:
        for slot in self._released_slots:
            self.vad.close_stream(slot)
        self._released_slots.clear()
        draining = [s for s in self._streams() if s.drain_requests]
        for stream in draining:
            if any(end for end, _ in stream.drain_requests):
                stream.session.flush_resampler()
                stream.session.pad_to_window()
            self._ready.add(stream)
        ready, self._ready = self._ready, set()
        batch = [s for s in ready if s.session.windows_ready and not s.session.closed]
        if batch:
            for stream in batch:
                if stream.session.vad_slot is None:
                    stream.session.vad_slot = self.vad.open_stream()
            taken = [s.session.take_windows() for s in batch]
            slots = [s.session.vad_slot for s in batch if s.session.vad_slot is not None]
            started = time.perf_counter()
            probs = await loop.run_in_executor(self._pool, self._score_rounds, slots, taken)
            self.metrics.vad_batch_seconds.observe(time.perf_counter() - started)
            interims = self.model_loaded  # one engine lookup per tick, not one per window
            after_window = self._after_window
            for stream, windows, stream_probs in zip(batch, taken, probs, strict=True):
                for (window, window_end, seq), prob in zip(windows, stream_probs, strict=True):
                    after_window(stream, window, prob, window_end, seq, interims)
        for stream in draining:
            requests, stream.drain_requests = stream.drain_requests, []
            for _, future in requests:
                if not future.done():
                    future.set_result(None)

    def _score_rounds(
        self, slots: list[int], taken: list[list[tuple[np.ndarray, int, int]]]
    ) -> list[list[float]]:
        """Worker thread: round r scores the r-th window of every stream that has one.

        A stream's windows must be scored in order (its state carries), so a tick with up to k
        windows per stream costs k batched calls — all inside one hand-off to this thread.
        """
        probs: list[list[float]] = [[] for _ in taken]
        rounds = max(len(windows) for windows in taken)
        vad, metrics = self.vad, self.metrics
        rows = list(range(len(taken)))
        for r in range(rounds):
            if r:  # streams with fewer windows drop out of the later rounds
                rows = [i for i in rows if len(taken[i]) > r]
            # One copy per round into the batch (np.stack costs over twice as much: it reshapes
            # every window in Python first).
            windows = np.concatenate([taken[i][r][0] for i in rows]).reshape(len(rows), -1)
            before = vad.windows_scored
            out = vad.process([slots[i] for i in rows], windows)
            scored = vad.windows_scored - before
            if scored:
                metrics.vad_batch_size.observe(scored)
            metrics.vad_windows["model"] += scored
            metrics.vad_windows["gate"] += len(rows) - scored
            for i, prob in zip(rows, out.tolist(), strict=True):
                probs[i].append(prob)
        return probs

    def _after_window(
        self,
        stream: Stream,
        window: np.ndarray,
        prob: float,
        window_end: int,
        seq: int,
        interims: bool,
    ) -> None:
        """One scored window through the endpointer; ``interims``: a model can make them."""
        session = stream.session
        stream.log_window(window_end, prob, seq)
        event, closed = session.on_window(window, prob, window_end, seq)
        if event is not None:
            if (
                event.kind == "start"
                and session.utterance is not None
                and session.params.vad_events
            ):
                stream.send(
                    speech_started_message(
                        session.utterance.index, event.sample, session.last_seq_processed
                    )
                )
            if closed is not None:
                self._emit_final(stream, closed, speech_final=closed.reason == "silence")
                return
        if session.utterance is None or not (interims and session.params.interim_results):
            return
        utterance = session.interim_due(self.interim_samples)
        if utterance is None:
            return
        if self._inference_behind(stream):
            self.metrics.results["interim_skipped"] += 1
            return  # due again at the next window; the final is never skipped
        utterance.interim_in_flight = True
        utterance.last_interim_sample = window_end
        self._schedule(
            stream,
            Closed(
                index=utterance.index,
                start_sample=utterance.start_sample,
                end_sample=window_end,
                audio=utterance.samples(),
                last_seq=seq,
                reason="",
            ),
            is_final=False,
            speech_final=False,
        )

    def _inference_behind(self, stream: Stream) -> bool:
        """Whether the model's queue is older than an interim interval: an interim queued now
        would arrive after the next one was due, so the model's time goes to finals instead."""
        engine = stream.classifier or self.engine
        return engine is not None and engine.queue_wait_s() > self.interim_interval_s

    # ---- results -----------------------------------------------------------------------------
    def _emit_final(self, stream: Stream, closed: Closed, *, speech_final: bool) -> None:
        self._schedule(stream, closed, is_final=True, speech_final=speech_final)

    def _schedule(
        self, stream: Stream, segment: Closed, *, is_final: bool, speech_final: bool
    ) -> None:
        previous = stream.last_result
        stream.last_result = asyncio.create_task(
            self._result_job(stream, previous, segment, is_final, speech_final)
        )

    async def _classify(self, stream: Stream, audio: np.ndarray) -> Prediction | None:
        engine = stream.classifier or self.engine  # the challenger if the client chose it
        if not self.model_loaded or not audio.size or engine is None or not engine.loaded:
            return None
        started = time.perf_counter()
        try:
            return await engine.classify(fit_window(audio))
        except Exception:
            log.exception("classification failed for %s", stream.session.session_id)
            stream.send(proto.warning_message("inference_failed", "classification failed"))
            return None
        finally:
            self.metrics.inference_seconds.observe(time.perf_counter() - started)

    async def _result_job(
        self,
        stream: Stream,
        previous: asyncio.Task[None] | None,
        segment: Closed,
        is_final: bool,
        speech_final: bool,
    ) -> None:
        session = stream.session
        started = time.perf_counter()
        prediction = await self._classify(stream, segment.audio)
        if previous is not None and not previous.done():
            with contextlib.suppress(Exception):
                await previous
        if not is_final:
            current = session.utterance
            if current is None or current.index != segment.index:
                return  # the utterance ended meanwhile: its final result supersedes this one
            current.interim_in_flight = False
        self.metrics.results["final" if is_final else "interim"] += 1
        if is_final:
            session.totals.final_results += 1
        else:
            session.totals.interim_results += 1
        message = results_message(
            utterance=segment.index,
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=segment.reason == "finalize",
            start_sample=segment.start_sample,
            end_sample=segment.end_sample,
            last_seq=segment.last_seq,
            prediction=prediction,
            top_k=self.top_k,
            request_id=stream.request_id,
        )
        stream.send(message, droppable=not is_final)
        stream.spool_result(
            message,
            start_sample=segment.start_sample,
            end_sample=segment.end_sample,
            reason=segment.reason,
            latency_ms=(time.perf_counter() - started) * 1000,
            threshold_on=session.endpointer.threshold_on,
        )
        if is_final and self.shadow is not None and stream.classifier is None:
            self.shadow.offer(
                stream,
                segment.audio,
                message,
                result_index=stream.results_spooled - 1,
                start_sample=segment.start_sample,
                end_sample=segment.end_sample,
            )
        if is_final:
            stream.send(
                utterance_end_message(
                    segment.index, segment.end_sample, segment.reason, segment.last_seq
                )
            )
