"""Prometheus series of the endpoint, per served version, read from the engines at scrape time.

Each version's engine keeps its own counters and histograms (:mod:`models.serving_metrics`);
this collector labels them with ``model_version`` so a dashboard can compare champion and
challenger: windows, batches, the batch-size histogram, request latency (queueing in the
micro-batcher + compute, seconds) and compute time per batch (log-mel + ONNX Runtime, seconds).
It is registered once per ``sonolake serve`` process in prometheus-client's global registry,
which KServe's ``/metrics`` serves next to KServe's own request histograms.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from models.serving_metrics import engine_series

if TYPE_CHECKING:
    from models.endpoint.versions import ServedVersions

PREFIX = "sonolake_endpoint"


class VersionsCollector:
    """A prometheus-client collector over a :class:`ServedVersions`."""

    def __init__(self, versions: ServedVersions, logmel_windows: dict[str, int]) -> None:
        self.versions = versions
        self.logmel_windows = logmel_windows
        """Windows sent as LOGMEL per version (they bypass the engine's micro-batcher)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        engines = self.versions.engines
        yield from engine_series(
            PREFIX, "model_version", engines, counters=("requests", "failed_requests", "batches")
        )
        info = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "Loaded versions (value 1) with the provider and artifact they run on.",
            labels=["model_version", "provider", "artifact"],
        )
        for version, engine in engines.items():
            info.add_metric([version, engine.provider or "", engine.artifact or ""], 1.0)
        logmel = CounterMetricFamily(
            f"{PREFIX}_logmel_windows",
            "Windows classified from LOGMEL features (batched per request).",
            labels=["model_version"],
        )
        for version, count in sorted(self.logmel_windows.items()):
            logmel.add_metric([version], count)
        aliases = GaugeMetricFamily(
            f"{PREFIX}_alias", "Alias → version (value 1).", labels=["alias", "model_version"]
        )
        for alias, version in sorted(self.versions.aliases.items()):
            aliases.add_metric([alias, version], 1.0)
        yield info
        yield logmel
        yield aliases
        yield CounterMetricFamily(
            f"{PREFIX}_swaps",
            "Alias map changes (promotions, rollbacks).",
            value=self.versions.swaps,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_refresh_errors",
            "Failed reads of the registry or loads of a version.",
            value=self.versions.refresh_errors,
        )

    def describe(self) -> Iterator[Any]:
        return iter(())
