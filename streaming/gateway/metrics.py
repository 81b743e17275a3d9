"""Prometheus metrics of one gateway (served as text at ``/metrics``).

The hot path runs thousands of times a second, so it only bumps plain integers and drops
values into :class:`FastHistogram` buckets (a ``bisect`` on a short tuple, ~1 µs); the
``prometheus_client`` objects are built from them when ``/metrics`` is scraped, by a custom
collector. Each gateway has its own registry, so gateways in one process (tests, benchmarks)
never share counters. Latencies are in seconds, as Prometheus expects.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "sonolake_gateway_"

FAST_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
SPOOL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class FastHistogram:
    """Cumulative-bucket histogram with an O(log buckets) ``observe`` and no locks.

    Observed from the event loop and from the VAD worker thread; a scrape may see one
    observation half-recorded (count bumped, sum not yet), which Prometheus tolerates.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class GatewayMetrics:
    """Every series the gateway exports: plain counters and fast histograms."""

    def __init__(self) -> None:
        self.sessions_opened = 0
        self.sessions_taken_over = 0
        self.sessions_moved = 0
        self.chunks = 0
        self.duplicate_chunks = 0
        self.dropped_chunks = 0
        self.rate_limited_frames = 0
        self.rate_limited_seconds = 0.0
        self.spool_failures = 0
        self.results: Counter[str] = Counter()
        self.vad_windows: Counter[str] = Counter()
        self.client_errors: Counter[str] = Counter()
        self.connections_rejected: Counter[str] = Counter()
        self.vad_batch_seconds = FastHistogram(FAST_BUCKETS_S)
        self.vad_batch_size = FastHistogram(BATCH_BUCKETS)
        self.inference_seconds = FastHistogram(FAST_BUCKETS_S)
        self.spool_lag_seconds = FastHistogram(SPOOL_BUCKETS_S)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read at scrape time (sessions, spool backlog, model loaded)."""
        self.gauges[name] = (documentation, read)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        for name, documentation, value in (
            ("sessions_opened", "Connections accepted", m.sessions_opened),
            (
                "sessions_taken_over",
                "Resumes of sessions another process served (continued from the registry)",
                m.sessions_taken_over,
            ),
            (
                "sessions_moved",
                "Sessions let go because a resume moved them to another process",
                m.sessions_moved,
            ),
            ("chunks", "Audio chunks accepted and spooled", m.chunks),
            (
                "duplicate_chunks",
                "Chunks received again after a resume (stored once)",
                m.duplicate_chunks,
            ),
            (
                "dropped_chunks",
                "Chunks dropped from live processing under backpressure (still spooled)",
                m.dropped_chunks,
            ),
            (
                "rate_limited_frames",
                "Audio frames read late because the session was over its audio rate limit",
                m.rate_limited_frames,
            ),
            (
                "rate_limited_seconds",
                "Seconds sessions were paused by the audio rate limit (summed)",
                m.rate_limited_seconds,
            ),
            ("spool_failures", "Spool writes that failed (sessions closed 1011)", m.spool_failures),
        ):
            yield CounterMetricFamily(PREFIX + name, documentation, value=value)
        for name, documentation, label, counts in (
            (
                "results",
                "Results sent, by kind (interim, final; interim_skipped: not made, the model "
                "was behind)",
                "kind",
                m.results,
            ),
            (
                "vad_windows",
                "512-sample windows through the VAD, by path (model or gate)",
                "path",
                m.vad_windows,
            ),
            ("client_errors", "Error messages sent, by code", "code", m.client_errors),
            (
                "connections_rejected",
                "Connections refused or closed by the gateway, by reason",
                "reason",
                m.connections_rejected,
            ),
        ):
            family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
            for key, value in sorted(counts.items()):
                family.add_metric([key], value)
            yield family
        for name, (documentation, read) in m.gauges.items():
            yield GaugeMetricFamily(PREFIX + name, documentation, value=read())
        yield m.vad_batch_seconds.family(
            PREFIX + "vad_batch_seconds", "Wall time of one VAD step (all sessions, one tick)"
        )
        yield m.vad_batch_size.family(
            PREFIX + "vad_batch_size", "Windows scored by the model in one batched call"
        )
        yield m.inference_seconds.family(
            PREFIX + "inference_seconds", "Wall time of one classification via the serving engine"
        )
        yield m.spool_lag_seconds.family(
            PREFIX + "spool_lag_seconds", "Chunk received → durable in the spool (fsync'd)"
        )
