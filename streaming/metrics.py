"""Prometheus metrics of one gateway (served as text at ``/metrics``).

Each gateway owns its own :class:`prometheus_client.CollectorRegistry`, so several gateways in
one process (tests, benchmarks) never share counters. Latencies are histograms in seconds, as
Prometheus expects; names carry the unit suffix.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

_FAST_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_SPOOL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    """Every series the gateway exports, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_active = Gauge(
            "sonolake_gateway_sessions_active", "Connections streaming right now", registry=r
        )
        self.sessions_opened = Counter(
            "sonolake_gateway_sessions_opened", "Connections accepted", registry=r
        )
        self.connections_rejected = Counter(
            "sonolake_gateway_connections_rejected",
            "Connections refused or closed by the gateway, by reason",
            ["reason"],
            registry=r,
        )
        self.chunks = Counter(
            "sonolake_gateway_chunks", "Audio chunks accepted and spooled", registry=r
        )
        self.duplicate_chunks = Counter(
            "sonolake_gateway_duplicate_chunks",
            "Chunks received again after a resume (stored once)",
            registry=r,
        )
        self.dropped_chunks = Counter(
            "sonolake_gateway_dropped_chunks",
            "Chunks whose audio was dropped from processing under backpressure (still spooled)",
            registry=r,
        )
        self.client_errors = Counter(
            "sonolake_gateway_client_errors", "Error messages sent, by code", ["code"], registry=r
        )
        self.results = Counter(
            "sonolake_gateway_results", "Results sent, by kind", ["kind"], registry=r
        )
        self.vad_windows = Counter(
            "sonolake_gateway_vad_windows",
            "512-sample windows through the VAD, by path (model or energy gate)",
            ["path"],
            registry=r,
        )
        self.vad_batch_seconds = Histogram(
            "sonolake_gateway_vad_batch_seconds",
            "Wall time of one batched VAD step (all sessions with a window ready)",
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.vad_batch_size = Histogram(
            "sonolake_gateway_vad_batch_size",
            "Windows scored by the model in one batched call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.inference_seconds = Histogram(
            "sonolake_gateway_inference_seconds",
            "Wall time of one classification through the serving engine",
            buckets=_FAST_BUCKETS_S,
            registry=r,
        )
        self.spool_lag_seconds = Histogram(
            "sonolake_gateway_spool_lag_seconds",
            "Chunk received → durable in the spool (fsync'd)",
            buckets=_SPOOL_BUCKETS_S,
            registry=r,
        )
        self.spool_inflight = Gauge(
            "sonolake_gateway_spool_inflight", "Chunk writes waiting for fsync", registry=r
        )
        self.model_loaded = Gauge(
            "sonolake_gateway_model_loaded", "1 when a classifier is loaded", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
