"""Shadow scoring: the challenger scores the champion's live segments on the side.

When the registry names a ``challenger``, the gateway holds it next to the champion. Every
final result the champion sends (one per utterance, its closed segment) is offered here, after
the ``Results`` is already queued for the client, and :meth:`ShadowScorer.offer` only appends
to a bounded queue: it never awaits, so the champion's results never wait for the challenger.
One task per gateway scores the queue with the challenger's own engine (its own micro-batcher
and worker thread) and spools each prediction as a decision record with ``role`` ``shadow``,
the champion's ``result_index`` (so champion and shadow rows of a segment join on
``(session_id, result_index)``) and the ground-truth label the segment's chunks carried. The
sidecar lands those records in ``gold.predictions`` only; clients never see them.

Why it is bounded twice:

- CPU budget: ``max_windows_per_s`` (a token bucket, burst of one second's worth) caps the
  challenger's work at that many 1-s windows per second, however busy the gateway is. A window
  costs ~0.3–1 ms on one core for the INT8 keyword models, so the default of 20/s stays under
  ~2 % of a core. Over budget, a segment is not shadow-scored (counted ``over_budget``).
- Queue: at most ``queue_limit`` segments wait; past it a new one is dropped (``queue_full``),
  so a slow challenger can never hold memory or fall minutes behind.

Shadow records are best-effort: they are written straight to the spool writer (no client
acknowledges them), so a gateway that dies loses the few in its queue, never a chunk or a
champion decision. Interim results are not shadow-scored: a final covers the whole segment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from features.pcm import SAMPLE_RATE_HZ
from features.window import fit_window
from streaming.gateway.results import Classifier
from streaming.spool import SpoolRecord, SpoolWriter

if TYPE_CHECKING:
    from streaming.gateway.stream import Stream

log = logging.getLogger("sonolake.gateway")

OUTCOMES = ("scored", "over_budget", "queue_full", "failed", "same_version")
"""How an offered segment ended: the ``outcome`` label of ``sonolake_gateway_shadow_segments``."""


@dataclass(frozen=True)
class ShadowJob:
    """One champion final result waiting for the challenger."""

    stream: Stream
    audio: np.ndarray
    """The segment's 16 kHz float32 samples, as the champion scored them."""
    message: dict[str, Any]
    """The champion's final ``Results`` (its times, seqs and version)."""
    result_index: int
    start_sample: int
    end_sample: int
    offered_s: float
    """time.perf_counter() when the segment was offered."""


class WindowBudget:
    """Token bucket in 1-s windows: ``rate`` per second, at most ``rate`` (≥ 1) saved up."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._level = self.burst
        self._at = time.monotonic()

    def take(self) -> bool:
        """Spend one window if the budget has one (False: over budget, nothing spent)."""
        now = time.monotonic()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        if self._level < 1.0:
            return False
        self._level -= 1.0
        return True


class ShadowScorer:
    """Scores the champion's final segments with the challenger; see the module docstring.

    ``challenger`` is set (and replaced) by the gateway; with none loaded, offers are ignored.
    ``max_windows_per_s`` 0 turns shadow scoring off.
    """

    def __init__(
        self, spool: SpoolWriter, *, max_windows_per_s: float = 20.0, queue_limit: int = 32
    ) -> None:
        if max_windows_per_s < 0 or queue_limit < 1:
            raise ValueError("max_windows_per_s must be ≥ 0 and queue_limit ≥ 1")
        self.spool = spool
        self.challenger: Classifier | None = None
        self.max_windows_per_s = max_windows_per_s
        self.queue_limit = queue_limit
        self.outcomes: Counter[str] = Counter()
        self._budget = WindowBudget(max_windows_per_s) if max_windows_per_s > 0 else None
        self._queue: deque[ShadowJob] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> bool:
        """True when there is a challenger to score and a budget to score it with."""
        return self._budget is not None and self.challenger is not None and self.challenger.loaded

    @property
    def challenger_version(self) -> str | None:
        return self.challenger.model_version if self.active and self.challenger else None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(
        self,
        stream: Stream,
        audio: np.ndarray,
        message: dict[str, Any],
        *,
        result_index: int,
        start_sample: int,
        end_sample: int,
    ) -> None:
        """A champion final result was just queued for the client: shadow it if there is room.

        Runs on the event loop and never waits. A segment the champion could not label (no
        model, empty audio) or one the challenger's version already made is not offered.
        """
        if not self.active or message.get("model_version") is None or not audio.size:
            return
        if message["model_version"] == self.challenger_version:
            self.outcomes["same_version"] += 1
            return
        assert self._budget is not None
        if not self._budget.take():
            self.outcomes["over_budget"] += 1
            return
        if len(self._queue) >= self.queue_limit:
            self.outcomes["queue_full"] += 1
            return
        self._queue.append(
            ShadowJob(
                stream, audio, message, result_index, start_sample, end_sample, time.perf_counter()
            )
        )
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """Score queued segments one at a time (the challenger's engine batches them anyway)."""
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self._queue.popleft()
            try:
                await self._score(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.outcomes["failed"] += 1
                log.exception("shadow scoring failed for %s", job.stream.session.session_id)

    async def drained(self) -> None:
        """Wait until every queued segment is scored and spooled (tests, graceful stop)."""
        await self._idle.wait()

    async def _score(self, job: ShadowJob) -> None:
        challenger = self.challenger
        if challenger is None or not challenger.loaded:
            return
        prediction = await challenger.classify(fit_window(job.audio))
        await self.spool.append(self.record(job, prediction))
        self.outcomes["scored"] += 1

    def record(self, job: ShadowJob, prediction: Any) -> SpoolRecord:
        """The shadow decision: the champion result's span and index, the challenger's answer."""
        stream, message = job.stream, job.message
        session = stream.session
        epoch = stream.epoch or datetime.now(UTC)
        return SpoolRecord.shadow_result(
            session_id=session.session_id,
            device_id=session.device_id,
            event_time=epoch
            + timedelta(microseconds=job.start_sample * 1_000_000 // SAMPLE_RATE_HZ),
            sample_rate=session.params.sample_rate,
            encoding=session.params.encoding,
            label=stream.label_at(message["last_seq"]),
            utterance=message["utterance"],
            result_index=job.result_index,
            speech_final=message["speech_final"],
            start_sample=job.start_sample,
            end_sample=job.end_sample,
            last_seq=message["last_seq"],
            predicted_label=prediction.label,
            score=float(prediction.score),
            top_k=[{"label": label, "score": float(p)} for label, p in prediction.top_k],
            model_version=prediction.model_version,
            latency_ms=round((time.perf_counter() - job.offered_s) * 1000, 3),
        )


class ShadowCollector(Collector):
    """``/metrics`` series of shadow scoring (registered on the gateway's own registry)."""

    def __init__(self, scorer: ShadowScorer, prefix: str = "sonolake_gateway_") -> None:
        self.scorer = scorer
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        segments = CounterMetricFamily(
            self.prefix + "shadow_segments",
            "Champion final segments offered to the challenger, by outcome",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            segments.add_metric([outcome], self.scorer.outcomes[outcome])
        yield segments
        yield GaugeMetricFamily(
            self.prefix + "shadow_queued",
            "Segments waiting for the challenger",
            value=self.scorer.queued,
        )
        yield GaugeMetricFamily(
            self.prefix + "shadow_active",
            "1 when a challenger is loaded and shadow scoring is on",
            value=float(self.scorer.active),
        )
