"""Prometheus metrics of the sidecar: batches, rows per table, lag, quarantines, replays.

The driver reports each finished batch (:meth:`SidecarMetrics.observe`, its ``on_batch`` hook);
the spool's backlog and lag are read when ``/metrics`` is scraped, so they are current even
while no batch runs. Served on its own port (``SONOLAKE_SIDECAR_METRICS_PORT``) by
:func:`serve`. Names follow the gateway's: ``sonolake_sidecar_*``, seconds for durations.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streaming.spool import sealed_segments, spool_lag_s

if TYPE_CHECKING:
    from streaming.sidecar.driver import BatchReport

PREFIX = "sonolake_sidecar_"


class SidecarMetrics:
    """Counters of landed batches, and scrape-time gauges of the spool it drains."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = Path(spool_dir)
        self.batches = 0
        self.replays = 0
        self.quarantined = 0
        self.rows: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.batch_seconds_total = 0.0
        self.last_batch_seconds = 0.0
        self.last_batch_at = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def observe(self, report: BatchReport) -> None:
        """Record one landed batch (the driver's ``on_batch`` hook)."""
        self.batches += 1
        self.replays += int(report.replayed)
        self.quarantined += len(report.quarantined)
        self.rows.update(report.committed_rows)
        self.skipped.update(report.skipped_tables)
        self.batch_seconds_total += report.seconds
        self.last_batch_seconds = report.seconds
        self.last_batch_at = time.time()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, metrics: SidecarMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        for name, documentation, value in (
            ("batches", "Micro-batches landed", m.batches),
            ("batch_replays", "Batches replayed after an interruption (retries)", m.replays),
            ("quarantined_segments", "Spool segments quarantined as unreadable", m.quarantined),
            ("batch_seconds", "Wall time spent landing batches (s)", m.batch_seconds_total),
        ):
            yield CounterMetricFamily(PREFIX + name, documentation, value=value)
        for name, documentation, counts in (
            ("rows", "Rows committed, by table", m.rows),
            ("skipped_commits", "Table commits skipped as already landed, by table", m.skipped),
        ):
            family = CounterMetricFamily(PREFIX + name, documentation, labels=["table"])
            for table, value in sorted(counts.items()):
                family.add_metric([table], value)
            yield family
        for name, documentation, value in (
            ("spool_backlog_segments", "Sealed segments waiting to land", _backlog(m.spool_dir)),
            (
                "spool_lag_seconds",
                "Age of the oldest sealed segment not landed yet (s): the landing lag",
                spool_lag_s(m.spool_dir),
            ),
            ("last_batch_seconds", "Wall time of the last batch (s)", m.last_batch_seconds),
            (
                "last_batch_timestamp_seconds",
                "Unix time the last batch landed (0: none yet)",
                m.last_batch_at,
            ),
        ):
            yield GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _backlog(spool_dir: Path) -> int:
    return len(sealed_segments(spool_dir))


def serve(metrics: SidecarMetrics, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the HTTP server."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
