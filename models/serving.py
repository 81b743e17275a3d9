"""The serving engine: the champion model behind ONNX Runtime, micro-batched and hot-swappable.

Why it looks like this:

- Providers CUDA → CPU. ``onnxruntime-gpu`` lists CUDA as *available* even on a machine without
  a GPU (or without the CUDA libraries) and then silently falls back to the CPU, so the engine
  asks the session what it actually got (``session.get_providers()``) and picks the artifact
  from that: FP16 on CUDA (the CUDA provider has no fast kernels for dynamically quantized INT8),
  INT8 on CPU. See :func:`choose_artifact` and :mod:`models.onnx_session`.
- Micro-batching. Many streams call :meth:`ServingEngine.classify` at once; one window per
  ``session.run`` wastes the runtime's per-call overhead. Calls queue up and one batch runs as
  soon as ``max_batch`` windows wait or the oldest has waited ``max_wait_us``. Inference runs in a
  worker thread, so the event loop keeps serving sockets meanwhile; windows that arrive during a
  batch form the next one, so batches grow with load by themselves.
- Hot swap. The loaded model is one immutable object behind one attribute. A batch reads that
  attribute once and runs to the end on that model; a swap builds and warms the new model first
  and then replaces the attribute. Requests in flight finish on the old session, later ones run
  on the new one, and none fails. Every :class:`Prediction` carries the version that made it.
- One feature code path: windows go through :func:`models.bundle.model_inputs` with the
  bundle's ``input_kind`` (log-mel, or the audio itself), as in training and evaluation.
  The engine caps NumPy's BLAS threads to ``intra_op_threads`` for the process (see
  :func:`models.onnx_session.limit_blas_threads`: 90× faster log-mel for one window on a busy box).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.onnx_session import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    IncompatibleModel,
    LoadedModel,
    choose_artifact,
    limit_blas_threads,
    load_model,
)
from models.serving_metrics import EngineMetrics

if TYPE_CHECKING:
    from models.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "IncompatibleModel",
    "LoadedModel",
    "NoModelLoaded",
    "Prediction",
    "ServingEngine",
    "choose_artifact",
]

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_WAIT_US = 2000
DEFAULT_TOP_K = 3
SYNC_CHUNK_WINDOWS = 256
"""classify_batch runs at most this many windows per session.run (bounds feature memory)."""


class NoModelLoaded(RuntimeError):
    """The engine has no model (no champion in the registry yet): there is nothing to run."""


@dataclass(frozen=True)
class Prediction:
    """The classification of one window."""

    label: str
    score: float
    """Softmax probability of ``label`` (0..1)."""
    top_k: list[tuple[str, float]]
    """The best labels with their probabilities, best first (``label`` is the first)."""
    model_version: str | None


@dataclass
class _Request:
    window: np.ndarray
    future: asyncio.Future[Prediction]
    enqueued_s: float
    """time.perf_counter() when classify() was called."""


class ServingEngine:
    """Classifies 1-s, 16 kHz windows with the loaded model; see the module docstring.

    Build it with :meth:`from_bundle` (a bundle folder) or :meth:`from_registry` (follows an
    alias, ``champion`` by default). ``max_wait_us`` bounds how long a lone window waits for
    company; ``intra_op_threads`` is ONNX Runtime's per-batch parallelism (1 leaves the other
    cores to the gateway's sockets and VAD).
    """

    def __init__(
        self,
        model: LoadedModel | None,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_us: int = DEFAULT_MAX_WAIT_US,
        top_k: int = DEFAULT_TOP_K,
        providers: Sequence[str] | None = None,
        artifact: str | None = None,
        intra_op_threads: int = 1,
        registry: Registry | None = None,
        alias: str = "champion",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}; use 1 or more")
        if max_wait_us < 0:
            raise ValueError(f"max_wait_us={max_wait_us}; use 0 or more")
        limit_blas_threads(intra_op_threads)
        self._model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_us / 1e6
        self.top_k = top_k
        self.providers = tuple(providers) if providers else None
        self.forced_artifact = artifact
        self.intra_op_threads = intra_op_threads
        self.registry = registry
        self.alias = alias
        self.metrics = EngineMetrics()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sonolake-infer")
        self._refresh_lock = threading.Lock()
        self._stop_following = threading.Event()
        self._follower: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[_Request] = deque()
        self._arrived: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._batcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_bundle(
        cls,
        path: Path | str,
        *,
        providers: Sequence[str] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_us: int = DEFAULT_MAX_WAIT_US,
        intra_op_threads: int = 1,
        artifact: str | None = None,
        model_version: str | None = None,
        top_k: int = DEFAULT_TOP_K,
    ) -> ServingEngine:
        """An engine over one bundle folder (``model_version`` defaults to a content hash)."""
        model = load_model(
            Path(path),
            version=model_version,
            providers=providers,
            artifact=artifact,
            intra_op_threads=intra_op_threads,
            warmup_batch=max_batch,
        )
        return cls(
            model,
            max_batch=max_batch,
            max_wait_us=max_wait_us,
            top_k=top_k,
            providers=providers,
            artifact=artifact,
            intra_op_threads=intra_op_threads,
        )

    @classmethod
    def from_registry(
        cls,
        registry: Registry,
        alias: str = "champion",
        *,
        providers: Sequence[str] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_us: int = DEFAULT_MAX_WAIT_US,
        intra_op_threads: int = 1,
        artifact: str | None = None,
        top_k: int = DEFAULT_TOP_K,
    ) -> ServingEngine:
        """An engine on the version ``alias`` points at; empty (``loaded`` False) if none."""
        engine = cls(
            None,
            max_batch=max_batch,
            max_wait_us=max_wait_us,
            top_k=top_k,
            providers=providers,
            artifact=artifact,
            intra_op_threads=intra_op_threads,
            registry=registry,
            alias=alias,
        )
        engine.refresh_now()
        return engine

    # ------------------------------------------------------------------ what is loaded
    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model_version(self) -> str | None:
        model = self._model
        return model.version if model else None

    @property
    def provider(self) -> str | None:
        """The provider the session actually runs on (None when no model is loaded)."""
        model = self._model
        return model.provider if model else None

    @property
    def artifact(self) -> str | None:
        model = self._model
        return model.artifact if model else None

    @property
    def labels(self) -> tuple[str, ...]:
        model = self._model
        return model.labels if model else ()

    def _require_model(self) -> LoadedModel:
        model = self._model
        if model is None:
            raise NoModelLoaded(
                "no model is loaded: the registry has no champion yet; promote a model with "
                "`sonolake promote`"
            )
        return model

    # ------------------------------------------------------------------ synchronous path
    def classify_batch(self, windows: np.ndarray | Sequence[np.ndarray]) -> list[Prediction]:
        """Classify ``[B, window_samples]`` float32 windows on the calling thread."""
        model = self._require_model()
        batch = np.asarray(windows, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != model.window_samples:
            raise ValueError(
                f"windows must be [batch, {model.window_samples}] float32 at 16 kHz, got shape "
                f"{batch.shape}; fit segments with features.fit_window"
            )
        out: list[Prediction] = []
        for start in range(0, batch.shape[0], SYNC_CHUNK_WINDOWS):
            out.extend(self._predict(model, batch[start : start + SYNC_CHUNK_WINDOWS]))
        return out

    def _predict(self, model: LoadedModel, windows: np.ndarray) -> list[Prediction]:
        probs = model.classify(windows)
        k = min(self.top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1)[:, :k]
        labels = model.labels
        return [
            Prediction(
                label=labels[row[0]],
                score=float(p[row[0]]),
                top_k=[(labels[i], float(p[i])) for i in row],
                model_version=model.version,
            )
            for p, row in zip(probs, order, strict=True)
        ]

    # ------------------------------------------------------------------ micro-batched path
    def queue_wait_s(self) -> float:
        """How long the oldest window still waiting for a batch has waited (s; 0 when none).

        Callers with optional work (the gateway's interim results) skip it while this exceeds
        what the work is worth, so a model too slow for the traffic delays nothing that must run.
        """
        pending = self._pending
        return time.perf_counter() - pending[0].enqueued_s if pending else 0.0

    async def classify(self, window_16k: np.ndarray) -> Prediction:
        """Classify one window, batched with whatever other callers are waiting."""
        model = self._require_model()
        window = np.asarray(window_16k, dtype=np.float32)
        if window.shape != (model.window_samples,):
            raise ValueError(
                f"window must be {model.window_samples} samples (1-D, 16 kHz), got shape "
                f"{window.shape}; fit segments with features.fit_window"
            )
        loop = asyncio.get_running_loop()
        self._ensure_batcher(loop)
        assert self._arrived is not None and self._full is not None
        future: asyncio.Future[Prediction] = loop.create_future()
        self._pending.append(_Request(window, future, time.perf_counter()))
        self._arrived.set()
        if len(self._pending) >= self.max_batch:
            self._full.set()
        return await future

    def _ensure_batcher(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._batcher is not None and not self._batcher.done():
            return
        # First call, or a new event loop (e.g. a second asyncio.run): start afresh on it.
        self._loop = loop
        self._pending = deque()
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._batcher = loop.create_task(self._run_batches(), name="sonolake-batcher")

    async def _run_batches(self) -> None:
        assert self._arrived is not None and self._full is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_company()
            count = min(len(self._pending), self.max_batch)
            batch = [self._pending.popleft() for _ in range(count)]
            batch = [r for r in batch if not r.future.done()]  # callers that gave up
            if not batch:
                continue
            try:
                predictions = await loop.run_in_executor(self._executor, self._run_requests, batch)
            except asyncio.CancelledError:
                for request in batch:
                    request.future.cancel()
                raise
            except Exception as exc:  # the batch failed: each caller gets the error
                self.metrics.count_failures(len(batch))
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            for request, prediction in zip(batch, predictions, strict=True):
                if not request.future.done():
                    request.future.set_result(prediction)

    async def _wait_for_company(self) -> None:
        """Wait until the batch is full or its oldest window has waited ``max_wait_s``."""
        assert self._full is not None
        if len(self._pending) >= self.max_batch or self.max_wait_s <= 0:
            return
        delay_s = self._pending[0].enqueued_s + self.max_wait_s - time.perf_counter()
        if delay_s <= 0:
            return
        self._full.clear()
        if len(self._pending) >= self.max_batch:
            return
        try:
            async with asyncio.timeout(delay_s):
                await self._full.wait()
        except TimeoutError:
            pass

    def _run_requests(self, batch: list[_Request]) -> list[Prediction]:
        """Worker thread: one batch on the model loaded right now (read exactly once)."""
        model = self._require_model()
        started = time.perf_counter()
        predictions = self._predict(model, np.stack([r.window for r in batch]))
        finished = time.perf_counter()
        self.metrics.observe_batch(
            len(batch), finished - started, [finished - r.enqueued_s for r in batch]
        )
        return predictions

    # ------------------------------------------------------------------ swapping models
    def swap(self, model: LoadedModel) -> None:
        """Serve ``model`` from now on; batches already running finish on the old one."""
        self._model = model
        self.metrics.count_swap()
        log.info(
            "serving model version %s on %s (%s)", model.version, model.provider, model.artifact
        )

    def load_bundle(self, path: Path | str, *, model_version: str | None = None) -> LoadedModel:
        """Load, warm up and swap in a bundle folder (same providers and artifact rules)."""
        model = load_model(
            Path(path),
            version=model_version,
            providers=self.providers,
            artifact=self.forced_artifact,
            intra_op_threads=self.intra_op_threads,
            warmup_batch=self.max_batch,
        )
        self.swap(model)
        return model

    def refresh_now(self) -> bool:
        """Check the registry alias; load and swap in its version if it changed. True if swapped.

        When the alias disappears the engine keeps serving what it has: an empty engine is worse
        than a slightly stale one. A version that cannot be loaded is logged and skipped.
        """
        if self.registry is None:
            raise RuntimeError("this engine was built from a bundle folder; it has no registry")
        with self._refresh_lock:
            version = self.registry.alias_version(self.alias)
            if version is None or version == self.model_version:
                return False
            bundle = self.registry.bundle_dir(version)
            self.load_bundle(bundle, model_version=version)
            return True

    async def refresh(self) -> bool:
        """:meth:`refresh_now` off the event loop (a model loads in milliseconds to seconds)."""
        return await asyncio.to_thread(self.refresh_now)

    def follow(self, poll_interval_s: float) -> None:
        """Check the alias every ``poll_interval_s`` seconds in a background thread."""
        if self.registry is None:
            raise RuntimeError("this engine was built from a bundle folder; it has no registry")
        if self._follower is not None and self._follower.is_alive():
            return
        self._stop_following.clear()
        self._follower = threading.Thread(
            target=self._follow_loop, args=(poll_interval_s,), name="sonolake-follow", daemon=True
        )
        self._follower.start()

    def _follow_loop(self, poll_interval_s: float) -> None:
        while not self._stop_following.wait(poll_interval_s):
            try:
                self.refresh_now()
            except Exception:
                self.metrics.count_refresh_error()
                log.exception("checking the %r alias failed; keeping the current model", self.alias)

    def stop_following(self) -> None:
        self._stop_following.set()
        if self._follower is not None:
            self._follower.join(timeout=10)
            self._follower = None

    def close(self) -> None:
        """Stop following, stop the batcher and the worker thread."""
        self.stop_following()
        batcher, loop = self._batcher, self._loop
        if batcher is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(batcher.cancel)
        self._executor.shutdown(wait=False, cancel_futures=True)
