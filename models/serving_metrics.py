"""Serving metrics as plain counters and histograms, exportable to Prometheus.

The engine updates these from its inference thread and the event loop, so each update takes a
lock; reading a :meth:`EngineMetrics.snapshot` is cheap. The engine does not register anything
with a global Prometheus registry itself (two engines in one process, or a test, would clash):
the gateway registers an :class:`EngineCollector` once, e.g.
``prometheus_client.REGISTRY.register(EngineCollector(engine))``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.serving import ServingEngine

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Upper bounds (windows) of the batch-size histogram."""
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the request-latency and batch-time histograms."""


@dataclass
class Histogram:
    """Counts per bucket (not cumulative), their sum and total, Prometheus-style buckets."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count ≤ le), …, ("+Inf", count)]`` as Prometheus wants them."""
        out, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class EngineMetrics:
    """What the engine did: requests, batches, their sizes and times, swaps and errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.failed_requests = 0
        self.batches = 0
        self.swaps = 0
        self.refresh_errors = 0
        self.batch_size = Histogram(BATCH_SIZE_BUCKETS)
        self.request_latency_s = Histogram(LATENCY_BUCKETS_S)
        """From classify() being called to its result being ready (queueing + inference)."""
        self.batch_time_s = Histogram(LATENCY_BUCKETS_S)
        """Features + ONNX Runtime for one batch."""

    def observe_batch(self, size: int, seconds: float, latencies_s: Sequence[float]) -> None:
        with self._lock:
            self.batches += 1
            self.requests += size
            self.batch_size.observe(size)
            self.batch_time_s.observe(seconds)
            for latency in latencies_s:
                self.request_latency_s.observe(latency)

    def count_failures(self, n: int) -> None:
        with self._lock:
            self.failed_requests += n

    def count_swap(self) -> None:
        with self._lock:
            self.swaps += 1

    def count_refresh_error(self) -> None:
        with self._lock:
            self.refresh_errors += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy for logs, benchmarks and tests."""
        with self._lock:
            return {
                "requests": self.requests,
                "failed_requests": self.failed_requests,
                "batches": self.batches,
                "swaps": self.swaps,
                "refresh_errors": self.refresh_errors,
                "mean_batch_size": self.batch_size.mean(),
                "max_batch_size_bucket": _highest_bucket(self.batch_size),
                "batch_size_buckets": self.batch_size.cumulative(),
                "mean_latency_s": self.request_latency_s.mean(),
                "latency_buckets_s": self.request_latency_s.cumulative(),
                "mean_batch_time_s": self.batch_time_s.mean(),
            }

    def histograms(self) -> dict[str, tuple[list[tuple[str, int]], float]]:
        with self._lock:
            return {
                name: (h.cumulative(), h.total)
                for name, h in (
                    ("batch_size", self.batch_size),
                    ("request_latency_seconds", self.request_latency_s),
                    ("batch_seconds", self.batch_time_s),
                )
            }


def _highest_bucket(histogram: Histogram) -> float | None:
    for bound, n in zip(
        reversed([*histogram.bounds, float("inf")]), reversed(histogram.counts), strict=True
    ):
        if n:
            return bound
    return None


class EngineCollector:
    """A prometheus-client collector that reads an engine's metrics at scrape time."""

    def __init__(self, engine: ServingEngine, prefix: str = "sonolake_inference") -> None:
        self.engine = engine
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        p, metrics = self.prefix, self.engine.metrics
        snap = metrics.snapshot()
        for name, doc in (
            ("requests", "Windows classified."),
            ("failed_requests", "Windows whose classification raised."),
            ("batches", "Inference batches run."),
            ("swaps", "Model hot-swaps."),
            ("refresh_errors", "Failed checks of the champion alias."),
        ):
            yield CounterMetricFamily(f"{p}_{name}", doc, value=snap[name])
        docs = {
            "batch_size": "Windows per inference batch.",
            "request_latency_seconds": "classify() call to result (queueing + inference).",
            "batch_seconds": "Features + ONNX Runtime time per batch.",
        }
        for name, (buckets, total) in metrics.histograms().items():
            yield HistogramMetricFamily(f"{p}_{name}", docs[name], buckets=buckets, sum_value=total)
        loaded = GaugeMetricFamily(f"{p}_model_loaded", "1 when a model is loaded.")
        loaded.add_metric([], 1.0 if self.engine.loaded else 0.0)
        yield loaded
        info = GaugeMetricFamily(
            f"{p}_model_info",
            "The model being served (value 1).",
            labels=["model_version", "provider", "artifact"],
        )
        if self.engine.loaded:
            info.add_metric(
                [
                    str(self.engine.model_version),
                    self.engine.provider or "",
                    self.engine.artifact or "",
                ],
                1.0,
            )
        yield info

    def describe(self) -> Iterator[Any]:
        return iter(())
