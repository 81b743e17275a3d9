"""The gateway's engine when inference runs elsewhere: windows go to an endpoint over gRPC.

It speaks the Open Inference Protocol's ``ModelInfer`` with its own message classes
(:mod:`models.infer_protocol`), so it imports neither KServe nor tritonclient.

:class:`RemoteEngine` has the interface the gateway uses of the in-process engine (``loaded``,
``model_version``, ``await classify(window)``, ``close()``), so a gateway switches by settings
alone (``SONOLAKE_INFERENCE_URL``). Why it looks like this:

- Batching across streams. ``classify`` calls queue up and one ``ModelInfer`` carries up to
  ``max_batch`` windows (``AUDIO`` ``[B, 16000]`` as raw bytes), sent when the batch is full or
  its oldest window has waited ``max_wait_us``; up to ``MAX_RPCS_IN_FLIGHT`` run at once, and
  windows arriving meanwhile form the next batch. On the endpoint, batches from every gateway
  meet again in the version's micro-batcher.
- A slow or dead endpoint must never hold a session up. Each call has a deadline
  (``timeout_s``); a window whose answer does not come in time, or whose batch failed, is a
  *miss*: ``classify`` returns None (the gateway then sends the result without a label, as
  when no model is loaded) and the miss is counted. After a failure, windows miss at once for
  ``retry_s`` seconds instead of queueing behind a dead peer; then the next batch tries again
  (gRPC reconnects with a short backoff). The change of state is logged once each way.
- ``loaded`` is True for a configured endpoint: the model is served remotely even while the
  endpoint is unreachable, and the misses say how much of the traffic went unscored.
  ``model_version`` is the version of the latest answer (probed once at construction).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from features import CLASSIFIER_WINDOW_SAMPLES
from models.infer_protocol import MODEL_INFER, ModelInferRequest, ModelInferResponse
from models.serving import Prediction
from models.serving_metrics import LATENCY_BUCKETS_S, histogram, read_histogram

log = logging.getLogger(__name__)

AUDIO, FP32, SCORES, LABEL = "AUDIO", "FP32", "SCORES", "LABEL"
"""The endpoint's tensor names (:mod:`models.endpoint.tensors`, which imports KServe)."""
MAX_RPCS_IN_FLIGHT = 4
TOP_K = 3
PROBE_TIMEOUT_S = 2.0
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
"""gRPC's default reconnect backoff grows to 120 s; an endpoint back after a restart should be
used within about 2 s."""


def grpc_target(url: str) -> str:
    """``grpc://host:port`` or ``host:port`` → ``host:port``."""
    target = url.removeprefix("grpc://").rstrip("/")
    if "://" in target or ":" not in target:
        raise ValueError(
            f"inference url {url!r}: use host:port or grpc://host:port (the gRPC port)"
        )
    return target


def infer_request(model_name: str, version: str | None, windows: np.ndarray) -> Any:
    """One ``ModelInferRequest`` carrying ``windows`` ``[B, 16000]`` as raw FP32 bytes."""
    batch = np.ascontiguousarray(windows, dtype="<f4")
    return ModelInferRequest(
        model_name=model_name,
        model_version=version or "",
        inputs=[
            ModelInferRequest.InferInputTensor(name=AUDIO, datatype=FP32, shape=list(batch.shape))
        ],
        raw_input_contents=[batch.tobytes()],
    )


def read_scores(response: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """``SCORES`` ``[B, n_labels]`` and the label names (response parameter ``labels``)."""
    names = [o.name for o in response.outputs]
    raw = response.raw_output_contents[names.index(SCORES)]
    shape = list(response.outputs[names.index(SCORES)].shape)
    scores = np.frombuffer(raw, dtype="<f4").reshape(shape)
    parameters = {entry.key: entry.value for entry in response.parameters}
    labels = tuple(json.loads(parameters["labels"].string_param))
    return scores, labels


def read_labels(response: Any) -> list[str]:
    """``LABEL`` (BYTES: a 4-byte little-endian length before each element) as strings."""
    names = [o.name for o in response.outputs]
    raw = response.raw_output_contents[names.index(LABEL)]
    out, at = [], 0
    while at < len(raw):
        (size,) = struct.unpack_from("<I", raw, at)
        out.append(raw[at + 4 : at + 4 + size].decode())
        at += 4 + size
    return out


def predictions(response: Any, top_k: int = TOP_K) -> list[Prediction]:
    scores, labels = read_scores(response)
    order = np.argsort(-scores, axis=1)[:, :top_k]
    version = response.model_version or None
    return [
        Prediction(
            labels[row[0]], float(s[row[0]]), [(labels[i], float(s[i])) for i in row], version
        )
        for s, row in zip(scores, order, strict=True)
    ]


def model_infer(channel: Any) -> Any:
    """The ``ModelInfer`` method of a (blocking or asyncio) channel."""
    return channel.unary_unary(
        MODEL_INFER,
        request_serializer=ModelInferRequest.SerializeToString,
        response_deserializer=ModelInferResponse.FromString,
    )


class RemoteMetrics:
    """Counters of the remote engine (updated on the event loop only)."""

    def __init__(self) -> None:
        self.windows = 0
        self.scored = 0
        self.misses = 0
        self.batches = 0
        self.rpc_errors = 0
        self.rpc_seconds = histogram("rpc_seconds", "ModelInfer round trip.", LATENCY_BUCKETS_S)

    def snapshot(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "scored": self.scored,
            "misses": self.misses,
            "batches": self.batches,
            "rpc_errors": self.rpc_errors,
            "mean_rpc_s": read_histogram(self.rpc_seconds).mean(),
        }


@dataclass
class _Request:
    window: np.ndarray
    future: asyncio.Future[Prediction]
    enqueued_s: float


class RemoteEngine:
    """See the module docstring. Build it anywhere; it connects on the loop of the first call."""

    def __init__(
        self,
        url: str,
        *,
        model_name: str = "audio-event-classifier",
        version: str | None = None,
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        max_batch: int = 64,
        max_wait_us: int = 2000,
        probe: bool = True,
    ) -> None:
        self.target = grpc_target(url)
        self.model_name = model_name
        self.version = version
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.max_batch = max_batch
        self.max_wait_s = max_wait_us / 1e6
        self.metrics = RemoteMetrics()
        self._model_version: str | None = None
        self._down_until = 0.0
        self._down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: grpc.aio.Channel | None = None
        self._infer: Any = None
        self._pending: deque[_Request] = deque()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._rpcs: set[asyncio.Task[None]] = set()
        if probe:
            self.probe()

    # ------------------------------------------------------------------ what the gateway reads
    @property
    def loaded(self) -> bool:
        return True

    @property
    def model_version(self) -> str | None:
        return self._model_version

    @property
    def up(self) -> bool:
        return not self._down

    def probe(self) -> bool:
        """One silent window through a blocking channel: learns the version; False if down."""
        window = np.zeros((1, CLASSIFIER_WINDOW_SAMPLES), np.float32)
        try:
            with grpc.insecure_channel(self.target) as channel:
                response = model_infer(channel)(
                    infer_request(self.model_name, self.version, window), timeout=PROBE_TIMEOUT_S
                )
        except grpc.RpcError as exc:
            log.warning("inference endpoint %s does not answer yet (%s)", self.target, exc.code())
            return False
        self._model_version = response.model_version or None
        log.info("inference endpoint %s serves version %s", self.target, self._model_version)
        return True

    # ------------------------------------------------------------------ classify
    def queue_wait_s(self) -> float:
        """How long the oldest window not yet sent has waited (s; 0 when none), as
        :meth:`models.serving.ServingEngine.queue_wait_s`."""
        return time.perf_counter() - self._pending[0].enqueued_s if self._pending else 0.0

    async def classify(self, window_16k: np.ndarray) -> Prediction | None:
        """The window's prediction, or None (a miss) if the endpoint cannot answer in time."""
        window = np.asarray(window_16k, dtype=np.float32)
        if window.shape != (CLASSIFIER_WINDOW_SAMPLES,):
            raise ValueError(
                f"window must be {CLASSIFIER_WINDOW_SAMPLES} samples (1-D, 16 kHz), got "
                f"{window.shape}; fit segments with features.fit_window"
            )
        self.metrics.windows += 1
        if self._down and time.monotonic() < self._down_until:
            self.metrics.misses += 1
            return None
        loop = asyncio.get_running_loop()
        self._ensure_batcher(loop)
        assert self._arrived is not None
        future: asyncio.Future[Prediction] = loop.create_future()
        self._pending.append(_Request(window, future, time.perf_counter()))
        self._arrived.set()
        try:
            prediction = await asyncio.wait_for(future, self.timeout_s + self.max_wait_s)
        except Exception:  # deadline, endpoint down, refused batch: a miss
            self.metrics.misses += 1
            return None
        self.metrics.scored += 1
        return prediction

    def _ensure_batcher(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._batcher is not None and not self._batcher.done():
            return
        self._loop = loop
        self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._infer = model_infer(self._channel)
        self._pending = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_RPCS_IN_FLIGHT)
        self._batcher = loop.create_task(self._run_batches(), name="sonolake-remote-batcher")

    async def _run_batches(self) -> None:
        assert self._arrived is not None and self._slots is not None
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            delay_s = self._pending[0].enqueued_s + self.max_wait_s - time.perf_counter()
            if len(self._pending) < self.max_batch and delay_s > 0:
                await asyncio.sleep(delay_s)
            await self._slots.acquire()
            count = min(len(self._pending), self.max_batch)
            batch = [self._pending.popleft() for _ in range(count)]
            batch = [r for r in batch if not r.future.done()]  # callers past their deadline
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._send(batch))
            self._rpcs.add(task)
            task.add_done_callback(self._rpcs.discard)

    async def _send(self, batch: list[_Request]) -> None:
        assert self._infer is not None and self._slots is not None
        started = time.perf_counter()
        try:
            request = infer_request(
                self.model_name, self.version, np.stack([r.window for r in batch])
            )
            response = await self._infer(request, timeout=self.timeout_s)
            results = predictions(response)
        except Exception as exc:
            self.metrics.rpc_errors += 1
            self._mark_down(exc)
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(ConnectionError(f"inference endpoint: {exc}"))
            return
        finally:
            self._slots.release()
        self.metrics.batches += 1
        self.metrics.rpc_seconds.observe(time.perf_counter() - started)
        self._mark_up(response.model_version or None)
        for r, prediction in zip(batch, results, strict=True):
            if not r.future.done():
                r.future.set_result(prediction)

    def _mark_down(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self.retry_s
        if not self._down:
            self._down = True
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
            log.warning(
                "inference endpoint %s failed (%s): windows are missed (scored without a label) "
                "and retried every %.1f s; %d missed so far",
                self.target,
                code,
                self.retry_s,
                self.metrics.misses,
            )

    def _mark_up(self, version: str | None) -> None:
        self._model_version = version or self._model_version
        if self._down:
            self._down = False
            log.warning(
                "inference endpoint %s answers again (version %s); %d windows were missed",
                self.target,
                version,
                self.metrics.misses,
            )

    def close(self) -> None:
        """Stop batching; windows still waiting become misses."""
        for task in [self._batcher, *self._rpcs]:
            if task is not None:
                task.cancel()
        channel, loop = self._channel, self._loop
        if channel is not None and loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(channel.close())
        self._channel = None
        self._batcher = None


class RemoteCollector:
    """Prometheus series of a :class:`RemoteEngine`, for the gateway's ``/metrics``."""

    def __init__(self, engine: RemoteEngine, prefix: str = "sonolake_remote_inference") -> None:
        self.engine = engine
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        p, m = self.prefix, self.engine.metrics
        for name, doc, value in (
            ("windows", "Windows sent to classify.", m.windows),
            ("scored", "Windows the endpoint scored in time.", m.scored),
            ("misses", "Windows left unscored: endpoint slow, down or refusing.", m.misses),
            ("batches", "ModelInfer calls answered.", m.batches),
            ("rpc_errors", "ModelInfer calls that failed or timed out.", m.rpc_errors),
        ):
            yield CounterMetricFamily(f"{p}_{name}", doc, value=value)
        rpc = read_histogram(m.rpc_seconds)
        yield HistogramMetricFamily(
            f"{p}_rpc_seconds",
            "ModelInfer round trip per batch.",
            buckets=rpc.buckets,
            sum_value=rpc.total,
        )
        up = GaugeMetricFamily(f"{p}_up", "1 while the endpoint answers.")
        up.add_metric([], 1.0 if self.engine.up else 0.0)
        yield up

    def describe(self) -> Iterator[Any]:
        return iter(())
