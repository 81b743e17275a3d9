"""``python -m benchmarks serving``: the inference endpoint against the in-process engine.

A real ``sonolake serve`` child process on free loopback ports, following a fresh registry
whose champion is the model below, called with the stock Triton clients (``tritonclient``)
over HTTP and gRPC: ``latency_ms_p50/p99`` of one window at batch 1 (one caller, sequential),
and ``windows_per_s`` plus latency under ``callers`` concurrent callers (one client each, batch
1 per request, so the endpoint's micro-batcher forms the batches). The baseline is the
in-process :class:`~models.serving.ServingEngine` on the same bundle with the same settings,
called the same two ways from one event loop, in the same run. Ratios:
``endpoint_vs_inprocess`` (gRPC windows/s under concurrency ÷ in-process windows/s) and
``grpc_latency_vs_inprocess`` (batch-1 p50, in-process ÷ gRPC: what the network hop costs).

The model is the bundle ``sonolake train`` leaves under the state folder when there is one,
otherwise a small untrained linear bundle (its labels mean nothing; its cost is mostly the
log-mel features, which every model pays). This process imports tritonclient and never
KServe: both register the same gRPC protobuf symbols and cannot share a process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.harness import BenchResult, percentiles

MODEL = "audio-event-classifier"
READY_TIMEOUT_S = 240.0


def _bundle(state: Path) -> tuple[Path, str]:
    from benchmarks.gateway import write_linear_bundle
    from sonolake import wiring
    from sonolake.settings import get_settings

    settings = get_settings()
    for name in ("full", "quick"):
        candidate = wiring.bundle_dir(settings, name)
        if (candidate / "model.json").exists():
            return candidate, f"trained ({name})"
    return write_linear_bundle(state / "linear"), "untrained linear"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_endpoint(root: Path, bundle: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    from sonolake import wiring
    from sonolake.settings import Settings

    settings = Settings(_env_file=None, state_dir=root / "state", lake_uri=str(root / "lake"))  # type: ignore[call-arg]
    registry = wiring.registry(settings)
    registry.set_alias("champion", registry.log_bundle(bundle, {}, {}))
    http_port, grpc_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")}
    env.update(SONOLAKE_STATE_DIR=str(root / "state"), SONOLAKE_LAKE_URI=str(root / "lake"))
    log = (root / "serve.log").open("wb")
    args = ["serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sonolake", *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sonolake serve exited {proc.returncode}; see {root}/serve.log")
        try:
            url = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/ready"
            if httpx.get(url, timeout=2).status_code == 200:
                return proc, http_port, grpc_port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the endpoint was not ready in time")


def _client(protocol: str, port: int) -> tuple[Any, Any]:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module, module.InferenceServerClient(f"127.0.0.1:{port}")


def _endpoint_sequential(protocol: str, port: int, window: np.ndarray, n: int) -> list[float]:
    module, client = _client(protocol, port)
    tensor = module.InferInput("AUDIO", [1, window.size], "FP32")
    tensor.set_data_from_numpy(window[None])
    for _ in range(10):  # warm the connection
        client.infer(MODEL, [tensor])
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        client.infer(MODEL, [tensor])
        latencies.append(time.perf_counter() - started)
    return latencies


def _endpoint_concurrent(
    protocol: str, port: int, window: np.ndarray, callers: int, seconds: float
) -> tuple[int, list[float], float]:
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        module, client = _client(protocol, port)
        tensor = module.InferInput("AUDIO", [1, window.size], "FP32")
        tensor.set_data_from_numpy(window[None])
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.infer(MODEL, [tensor])
            except BaseException as exc:
                errors.append(exc)
                return
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    if errors:
        raise RuntimeError(f"{len(errors)} endpoint calls failed: {errors[0]!r}")
    return len(latencies), latencies, time.perf_counter() - started


async def _inprocess(engine: Any, window: np.ndarray, n: int, callers: int, seconds: float) -> dict:
    for _ in range(10):
        await engine.classify(window)
    sequential = []
    for _ in range(n):
        started = time.perf_counter()
        await engine.classify(window)
        sequential.append(time.perf_counter() - started)
    concurrent: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await engine.classify(window)
            concurrent.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return {
        "sequential": sequential,
        "concurrent": concurrent,
        "elapsed": time.perf_counter() - began,
    }


def _ms(values: list[float]) -> dict[str, float]:
    return {k: round(v * 1000, 3) for k, v in percentiles(values, 50, 99).items()}


def run(quick: bool) -> BenchResult:
    from models.serving import ServingEngine
    from sonolake.settings import get_settings

    n, callers, seconds = (200, 8, 3.0) if quick else (1000, 16, 10.0)
    settings = get_settings()
    rng = np.random.default_rng(0)
    window = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="sonolake-bench-serving-") as tmp:
        root = Path(tmp)
        bundle, kind = _bundle(root)
        engine = ServingEngine.from_bundle(
            bundle,
            max_batch=settings.serving_max_batch,
            max_wait_us=settings.serving_max_wait_us,
            intra_op_threads=settings.serving_intra_op_threads,
        )
        inprocess = asyncio.run(_inprocess(engine, window, n, callers, seconds))
        provider, artifact = engine.provider, engine.artifact
        engine.close()
        proc, http_port, grpc_port = _start_endpoint(root, bundle)
        metrics: dict[str, Any] = {}
        try:
            for protocol, port in (("http", http_port), ("grpc", grpc_port)):
                seq = _endpoint_sequential(protocol, port, window, n)
                count, lat, elapsed = _endpoint_concurrent(protocol, port, window, callers, seconds)
                metrics[protocol] = {
                    "batch1_latency_ms": _ms(seq),
                    "concurrent_windows_per_s": round(count / elapsed, 1),
                    "concurrent_latency_ms": _ms(lat),
                }
            text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
            metrics["endpoint_mean_batch_size"] = _mean_batch(text)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    baseline = {
        "batch1_latency_ms": _ms(inprocess["sequential"]),
        "concurrent_windows_per_s": round(len(inprocess["concurrent"]) / inprocess["elapsed"], 1),
        "concurrent_latency_ms": _ms(inprocess["concurrent"]),
    }
    ratios = {
        "endpoint_vs_inprocess": round(
            metrics["grpc"]["concurrent_windows_per_s"] / baseline["concurrent_windows_per_s"], 3
        ),
        "http_vs_inprocess": round(
            metrics["http"]["concurrent_windows_per_s"] / baseline["concurrent_windows_per_s"], 3
        ),
        "grpc_latency_vs_inprocess": round(
            baseline["batch1_latency_ms"]["p50"] / metrics["grpc"]["batch1_latency_ms"]["p50"], 3
        ),
    }
    params = {
        "model": kind,
        "provider": provider,
        "artifact": artifact,
        "batch1_calls": n,
        "callers": callers,
        "seconds": seconds,
        "max_batch": settings.serving_max_batch,
        "max_wait_us": settings.serving_max_wait_us,
    }
    return BenchResult("serving", params=params, metrics=metrics, baseline=baseline, ratios=ratios)


def _mean_batch(text: str) -> float | None:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sonolake_endpoint_batch_size_"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = values.get(name.split("{")[0], 0.0) + float(value)
    count = values.get("sonolake_endpoint_batch_size_count")
    return round(values["sonolake_endpoint_batch_size_sum"] / count, 2) if count else None
