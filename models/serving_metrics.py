"""Serving metrics: counters and ``prometheus_client`` histograms, exported per engine.

The engine updates these from its inference thread and the event loop. Counters take a lock;
the histograms are ``prometheus_client``'s own (thread-safe, one implementation for every
engine), created unregistered: each engine owns its series, so two engines in one process (the
gateway's champion and challenger, the endpoint's versions, a test) never share or clash. The
process that serves them registers a collector that labels each engine's series:
:class:`EngineCollector` (by ``role``, on the gateway's ``/metrics``) or the endpoint's
:class:`models.endpoint.metrics.VersionsCollector` (by ``model_version``); both go through
:func:`engine_series`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

if TYPE_CHECKING:
    from models.serving import ServingEngine

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Upper bounds (windows) of the batch-size histogram."""
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the request-latency and batch-time histograms."""
COUNTER_DOCS = {
    "requests": "Windows classified.",
    "failed_requests": "Windows whose classification raised.",
    "batches": "Inference batches run.",
    "swaps": "Model hot-swaps.",
    "refresh_errors": "Failed checks of the followed alias.",
}
HISTOGRAM_DOCS = {
    "batch_size": "Windows per inference batch.",
    "request_latency_seconds": "classify() call to result: micro-batch queueing + compute.",
    "batch_seconds": "Compute per batch: log-mel features + ONNX Runtime.",
}


def histogram(name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
    """A ``prometheus_client`` histogram registered nowhere (its owner exports it)."""
    return Histogram(name, documentation, buckets=tuple(buckets), registry=None)


@dataclass(frozen=True)
class HistogramReading:
    """One consistent read of a histogram: cumulative buckets, sum and count."""

    buckets: list[tuple[str, float]]
    """``[(le, count ≤ le), …, ("+Inf", count)]`` as Prometheus writes them."""
    total: float

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def highest_bucket(self) -> float | None:
        """Upper bound of the highest bucket anything fell in (None when empty)."""
        previous, highest = 0.0, None
        for le, running in self.buckets:
            if running > previous:
                highest = float(le)
            previous = running
        return highest


def read_histogram(h: Histogram) -> HistogramReading:
    samples = next(iter(h.collect())).samples
    buckets = [(s.labels["le"], s.value) for s in samples if s.name.endswith("_bucket")]
    total = next((s.value for s in samples if s.name.endswith("_sum")), 0.0)
    return HistogramReading(buckets, total)


class EngineMetrics:
    """What the engine did: requests, batches, their sizes and times, swaps and errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.failed_requests = 0
        self.batches = 0
        self.swaps = 0
        self.refresh_errors = 0
        self.batch_size = histogram("batch_size", HISTOGRAM_DOCS["batch_size"], BATCH_SIZE_BUCKETS)
        self.request_latency_s = histogram(
            "request_latency_seconds", HISTOGRAM_DOCS["request_latency_seconds"], LATENCY_BUCKETS_S
        )
        """From classify() being called to its result being ready (queueing + inference)."""
        self.batch_time_s = histogram(
            "batch_seconds", HISTOGRAM_DOCS["batch_seconds"], LATENCY_BUCKETS_S
        )
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

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {name: getattr(self, name) for name in COUNTER_DOCS}

    def histograms(self) -> dict[str, HistogramReading]:
        return {
            "batch_size": read_histogram(self.batch_size),
            "request_latency_seconds": read_histogram(self.request_latency_s),
            "batch_seconds": read_histogram(self.batch_time_s),
        }

    def snapshot(self) -> dict[str, Any]:
        """A copy for logs, benchmarks and tests."""
        readings = self.histograms()
        size, latency = readings["batch_size"], readings["request_latency_seconds"]
        return {
            **self.counters(),
            "mean_batch_size": size.mean(),
            "max_batch_size_bucket": size.highest_bucket(),
            "batch_size_buckets": size.buckets,
            "mean_latency_s": latency.mean(),
            "latency_buckets_s": latency.buckets,
            "mean_batch_time_s": readings["batch_seconds"].mean(),
        }


def engine_series(
    prefix: str,
    label: str,
    engines: Mapping[str, ServingEngine],
    counters: Sequence[str] = tuple(COUNTER_DOCS),
) -> Iterator[Any]:
    """Counter and histogram families of several engines, one ``label`` value per engine."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    counter_families = {
        name: CounterMetricFamily(f"{prefix}_{name}", COUNTER_DOCS[name], labels=[label])
        for name in counters
    }
    histogram_families = {
        name: HistogramMetricFamily(f"{prefix}_{name}", doc, labels=[label])
        for name, doc in HISTOGRAM_DOCS.items()
    }
    for key, engine in engines.items():
        values = engine.metrics.counters()
        for name, family in counter_families.items():
            family.add_metric([key], values[name])
        for name, reading in engine.metrics.histograms().items():
            histogram_families[name].add_metric([key], reading.buckets, reading.total)
    yield from counter_families.values()
    yield from histogram_families.values()


class EngineCollector:
    """A prometheus-client collector over the gateway's engines, labelled by ``role``
    (``champion``, ``challenger``); read at scrape time."""

    def __init__(
        self, engines: Mapping[str, ServingEngine], prefix: str = "sonolake_inference"
    ) -> None:
        self.engines = dict(engines)
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        p = self.prefix
        yield from engine_series(p, "role", self.engines)
        loaded = GaugeMetricFamily(
            f"{p}_model_loaded", "1 when the engine has a model loaded.", labels=["role"]
        )
        info = GaugeMetricFamily(
            f"{p}_model_info",
            "The model each engine serves (value 1).",
            labels=["role", "model_version", "provider", "artifact"],
        )
        for role, engine in self.engines.items():
            loaded.add_metric([role], 1.0 if engine.loaded else 0.0)
            if engine.loaded:
                info.add_metric(
                    [role, str(engine.model_version), engine.provider or "", engine.artifact or ""],
                    1.0,
                )
        yield loaded
        yield info

    def describe(self) -> Iterator[Any]:
        return iter(())
