"""``python -m benchmarks gateway``: N concurrent real-time streams through the gateway.

Three processes: the gateway under test (the real
:class:`~streaming.gateway.server.Gateway` with its
spool writer, batched VAD and a loaded model), a load generator (N WebSocket clients, each
sending 100 ms PCM16 chunks of real speech at real-time pacing, staggered), and this parent,
which starts them and collects the figures. The baseline, in the same run and with the same
load, is a bare ``websockets`` server that only receives the frames.

- ``cpu_us_per_chunk``: CPU time of the server process (all its threads) during the measured
  window, divided by the chunks sent in it. ``cpu_per_chunk_vs_echo`` is ours / baseline.
- ``latency_ms_*``: chunk sent → the first result (interim or final) that covers it, i.e. whose
  ``last_seq`` is that chunk, received — measured by the load generator's clock.
- ``dropped``: chunks the gateway dropped from processing under backpressure (its totals);
  ``dropped_fraction`` of all chunks sent. A saturated gateway drops work, so its CPU per
  chunk then *understates* the cost: compare ``cpu_us_per_chunk`` where nothing is dropped.
  ``errors``: Error messages, failed connections and abnormal closes.
- ``streams_per_core``: streams one core could serve at that CPU per chunk (10 chunks/s each);
  ``load_generator_cores`` and ``load_generator_cpu_us_per_chunk``: the load generator's own
  cost, which shares this machine's cores with the gateway.
- ``cpu_us_per_chunk_by_thread``: the server's CPU per chunk by thread (event loop, ``vad``,
  ``spool-io``, the inference engine's, onnxruntime's ``native``), read from ``/proc`` inside
  the gateway over the same window; ``vad_model_windows_per_chunk`` and
  ``vad_gated_windows_per_chunk``: 512-sample windows the Silero model scored or the energy
  gate skipped. With ``--profile DIR`` the level runs once more under cProfile and
  ``cpu_us_per_chunk_by_area`` splits each thread's CPU by area (:mod:`benchmarks.cpu_split`).

The full run starts at 300 streams and then raises the stream count while p99 latency stays
under 100 ms (nothing dropped, nothing failed), or lowers it until it does, and reports the
most streams held (``max_streams_p99_under_100ms``). ``--streams N`` measures one level only.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cpu_split import AreaProfiler, per_chunk_us, thread_cpu_s, thread_delta
from benchmarks.harness import BenchResult, percentiles
from models.dataset import LABELS
from sonolake.settings import get_settings

CHUNK_MS = 100
CHUNK_SAMPLES = 1600
P99_GOAL_MS = 100.0
CHUNKS_PER_STREAM_S = 1000 // CHUNK_MS
SEARCH_LEVELS = (25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1250, 1500, 2000, 3000)
"""Stream counts the full run may try, from its first level up (or down) to the limit."""


def write_linear_bundle(folder: Path, seed: int = 0) -> Path:
    """A small, UNTRAINED model bundle in the bundle layout (FP32 ``model.onnx`` + ``model.json``).

    log-mel [B, frames, mels] → mean over frames → linear → softmax. Its labels mean nothing;
    it exists so the gateway's inference path (features, engine, batching, result messages)
    can be exercised and timed on a machine where no model has been trained yet.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from features import FEATURE_VERSION, N_MELS

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.5, (N_MELS, len(LABELS))).astype(np.float32)
    bias = rng.normal(0, 0.1, len(LABELS)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["logmel"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weights"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "linear_keyword_model",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", "frames", N_MELS])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    manifest = {
        "labels": list(LABELS),
        "feature_version": FEATURE_VERSION,
        "input_name": "logmel",
        "output_name": "probs",
        "sample_rate": 16000,
        "window_samples": 16000,
        "metrics": {"note": "untrained linear model for plumbing and timing"},
    }
    (folder / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


# ---- the servers (child processes) -----------------------------------------------------------
def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _load_engine(bundle_dir: str) -> tuple[Any, str]:
    """The registry's champion when there is one, else the untrained linear bundle."""
    from models.serving import ServingEngine
    from sonolake import wiring

    settings = get_settings()
    try:
        if not wiring.registry_exists(settings):
            raise FileNotFoundError(settings.mlflow_tracking_uri)  # do not create an empty one
        engine = wiring.serving_engine(settings, providers=["CPUExecutionProvider"], follow=False)
        if engine.loaded:
            return engine, f"champion version {engine.model_version}"
    except Exception:  # no registry here: fall back
        pass
    engine = ServingEngine.from_bundle(
        write_linear_bundle(Path(bundle_dir)),
        providers=["CPUExecutionProvider"],
        model_version="untrained-linear",
    )
    return engine, "untrained linear bundle (no champion in the registry)"


async def _serve_gateway(conn: Connection, workdir: str) -> None:
    from streaming.gateway.server import Gateway, GatewayConfig
    from streaming.spool import SpoolWriter

    engine, model = _load_engine(os.path.join(workdir, "bundle"))
    config = GatewayConfig(
        port=0, max_sessions=20_000, max_sessions_per_credential=20_000, idle_timeout_s=60.0
    )
    # The group-commit interval the product runs with (SONOLAKE_GATEWAY_SPOOL_COMMIT_MS): each
    # commit is one fsync, whose CPU cost is paid per commit, not per chunk.
    commit_ms = get_settings().gateway_spool_commit_ms
    async with SpoolWriter(Path(workdir) / "spool", commit_interval_ms=commit_ms) as spool:
        gateway = Gateway(config, spool=spool, engine=engine)
        await gateway.start()
        conn.send({"port": gateway.port, "pid": os.getpid(), "model": model})
        executors: dict[str, Executor] = {
            "vad": gateway.processor._pool,  # the batched Silero calls
            "spool-io": spool._io,  # Arrow encoding, write, fsync
        }
        splits = await _serve_commands(conn, executors, lambda: dict(gateway.metrics.vad_windows))
        await gateway.stop()
    engine.close()
    conn.send({"stopped": True, "splits": splits})


async def _serve_commands(
    conn: Connection, executors: dict[str, Executor], windows: Callable[[], dict[str, int]]
) -> list[CpuSplit]:
    """Answer the parent until ``stop``: each ``window`` command is sampled in the background.

    A window is ``("window", t0, t1, profile_dir or None)`` in ``time.perf_counter`` seconds
    (CLOCK_MONOTONIC: the same clock in every process of this machine).
    """
    loop = asyncio.get_running_loop()
    samplers: list[asyncio.Task[CpuSplit]] = []
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            break
        _, t0, t1, profile_dir = command
        sampler = _sample_window(t0, t1, profile_dir, executors, windows)
        samplers.append(asyncio.create_task(sampler))
    return [await sampler for sampler in samplers]


async def _sample_window(
    t0: float,
    t1: float,
    profile_dir: str | None,
    executors: dict[str, Executor],
    windows: Callable[[], dict[str, int]],
) -> CpuSplit:
    """Per-thread CPU over [t0, t1), and with ``profile_dir`` a cProfile split by area.

    ``windows`` reads the gateway's VAD window counters (by path: ``model`` or ``gate``).
    """
    await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
    profiler = AreaProfiler(executors) if profile_dir else None
    if profiler is not None:
        await profiler.start()
    before, windows_before = thread_cpu_s(), windows()
    await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
    threads = thread_delta(before, thread_cpu_s())
    windows_after = windows()
    vad_windows = {k: windows_after[k] - windows_before.get(k, 0) for k in windows_after}
    areas: dict[str, dict[str, float]] = {}
    if profiler is not None:
        await profiler.stop()
        areas = profiler.split()
        profiler.dump(Path(profile_dir or "."))
    return CpuSplit(
        threads_s=threads, areas_s=areas, profiled=profiler is not None, vad_windows=vad_windows
    )


async def _serve_echo(conn: Connection) -> None:
    """The baseline: a bare websockets server that receives the frames and does nothing."""
    from websockets.asyncio.server import ServerConnection, serve

    async def receive(ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, str):  # CloseStream: close like the gateway would
                break

    async with serve(receive, "127.0.0.1", 0, compression=None, max_size=2**17) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        conn.send({"port": port, "pid": os.getpid(), "model": None})
        splits = await _serve_commands(conn, {}, dict)
    conn.send({"stopped": True, "splits": splits})


def _server_main(conn: Connection, kind: str, workdir: str) -> None:
    _raise_fd_limit()
    if kind == "gateway":
        asyncio.run(_serve_gateway(conn, workdir))
    else:
        asyncio.run(_serve_echo(conn))


@dataclass
class CpuSplit:
    """Where the server's CPU went over one measured window (seconds, not yet per chunk)."""

    threads_s: dict[str, float]
    """CPU seconds per thread group (``MainThread`` is the event loop)."""
    areas_s: dict[str, dict[str, float]]
    """{thread: {area: own seconds}} from cProfile (empty unless profiled)."""
    profiled: bool
    vad_windows: dict[str, int] = field(default_factory=dict)
    """512-sample windows the VAD took in the window, by path (``model`` or ``gate``)."""


# ---- the load generator (child process) ------------------------------------------------------
@dataclass
class LoadResult:
    streams: int
    chunks: int = 0
    chunks_total: int = 0
    """All chunks sent, warm-up included (``dropped`` counts over the same span)."""
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    dropped: int = 0
    results: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    send_lag_ms_p99: float = 0.0
    measure_s: float = 0.0
    error_samples: list[str] = field(default_factory=list)


def _stream_audio(streams: int, seconds: float) -> list[bytes]:
    """Per stream, PCM16 bytes of real words and quiet gaps (20 distinct sequences, rotated)."""
    from benchmarks.vad import fleet_audio

    distinct = fleet_audio(min(streams, 20), seconds)
    return [distinct[i % len(distinct)].tobytes() for i in range(streams)]


async def _load(
    url: str,
    streams: int,
    warmup_s: float,
    measure_s: float,
    server_pid: int,
    expect_results: bool,
    announce: Callable[[tuple[float, float]], None],
) -> LoadResult:
    import psutil
    from websockets.asyncio.client import connect

    audio = _stream_audio(streams, warmup_s + measure_s + 2)
    result = LoadResult(streams=streams, measure_s=measure_s)
    server = psutil.Process(server_pid)
    me = psutil.Process()
    start = time.perf_counter() + 1.0
    window = (start + warmup_s, start + warmup_s + measure_s)
    announce(window)  # the server samples its own threads over the same window
    lags: list[float] = []
    query = "?device_id=bench-{i}&interim_results=true"

    async def one(index: int) -> None:
        phase = CHUNK_MS / 1000 * index / streams
        await asyncio.sleep(max(0.0, start - time.perf_counter() - 0.9 + 0.9 * index / streams))
        sent: dict[int, float] = {}
        done: set[int] = set()
        try:
            async with connect(
                url + query.format(i=index), compression=None, open_timeout=60, max_size=2**22
            ) as ws:

                async def read() -> None:
                    async for raw in ws:
                        message = json.loads(raw)
                        kind = message["type"]
                        if kind == "Results":
                            seq = message["last_seq"]
                            stamp = sent.get(seq)
                            now = time.perf_counter()
                            if (
                                stamp is not None
                                and seq not in done
                                and window[0] <= stamp < window[1]
                            ):
                                done.add(seq)
                                result.latencies_ms.append((now - stamp) * 1000)
                                result.results += 1
                        elif kind == "Error":
                            result.errors += 1
                            if len(result.error_samples) < 5:
                                result.error_samples.append(message.get("message", ""))
                        elif kind == "Metadata" and message.get("final"):
                            result.dropped += int(message["totals"]["dropped_chunks"])

                reader = asyncio.create_task(read())
                pcm = audio[index]
                chunk_bytes = CHUNK_SAMPLES * 2
                t0 = start + phase
                seq = 0
                while True:
                    due = t0 + seq * CHUNK_MS / 1000
                    if due >= window[1]:
                        break
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    now = time.perf_counter()
                    if window[0] <= due < window[1]:
                        lags.append(now - due)
                        result.chunks += 1
                    offset = (seq * chunk_bytes) % (len(pcm) - chunk_bytes)
                    sent[seq] = now
                    sent.pop(seq - 200, None)
                    result.chunks_total += 1
                    await ws.send(pcm[offset : offset + chunk_bytes])
                    seq += 1
                await ws.send(json.dumps({"type": "CloseStream"}))
                await asyncio.wait_for(reader, 60)
                if ws.close_code not in (1000, None):
                    result.errors += 1
        except Exception as exc:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(f"{type(exc).__name__}: {exc}")

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
        server0, me0 = sum(server.cpu_times()[:2]), sum(me.cpu_times()[:2])
        await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
        result.server_cpu_s = sum(server.cpu_times()[:2]) - server0
        result.client_cpu_s = sum(me.cpu_times()[:2]) - me0

    await asyncio.gather(sample_cpu(), *(one(i) for i in range(streams)))
    result.send_lag_ms_p99 = percentiles([x * 1000 for x in lags], 99)["p99"]
    if not expect_results:
        result.latencies_ms = []
    return result


def _load_main(
    conn: Connection,
    url: str,
    streams: int,
    warmup_s: float,
    measure_s: float,
    server_pid: int,
    expect_results: bool,
) -> None:
    _raise_fd_limit()
    result = asyncio.run(
        _load(
            url,
            streams,
            warmup_s,
            measure_s,
            server_pid,
            expect_results,
            lambda window: conn.send(("window", *window)),
        )
    )
    conn.send(result)


# ---- the parent ----------------------------------------------------------------------------
class _Server:
    def __init__(self, kind: str, workdir: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_server_main, args=(child, kind, workdir), daemon=True)
        self.process.start()
        if not self.conn.poll(120):
            raise RuntimeError(f"the {kind} server did not start within 120 s")
        self.info: dict[str, Any] = self.conn.recv()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.info['port']}/v1/listen"

    def stop(self) -> list[CpuSplit]:
        """Stop the server; the CPU splits of the windows it was told about, in order."""
        self.conn.send("stop")
        splits: list[CpuSplit] = []
        if self.conn.poll(60):
            splits = self.conn.recv().get("splits", [])
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
        return splits


def _run_load(
    server: _Server,
    streams: int,
    warmup_s: float,
    measure_s: float,
    expect_results: bool,
    profile_dir: Path | None = None,
) -> LoadResult:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=_load_main,
        args=(child, server.url, streams, warmup_s, measure_s, server.info["pid"], expect_results),
        daemon=True,
    )
    process.start()
    if not parent.poll(180):
        process.kill()
        raise RuntimeError("the load generator did not start in time")
    _, t0, t1 = parent.recv()
    server.conn.send(("window", t0, t1, str(profile_dir) if profile_dir else None))
    if not parent.poll(warmup_s + measure_s + 180):
        process.kill()
        raise RuntimeError("the load generator did not finish in time")
    result: LoadResult = parent.recv()
    process.join(30)
    return result


def _figures(result: LoadResult) -> dict[str, Any]:
    pct = percentiles(result.latencies_ms, 50, 95, 99)
    cpu_us_per_chunk = result.server_cpu_s * 1e6 / max(1, result.chunks)
    return {
        "streams": result.streams,
        "chunks": result.chunks,
        "latency_ms_p50": pct["p50"],
        "latency_ms_p95": pct["p95"],
        "latency_ms_p99": pct["p99"],
        "cpu_us_per_chunk": cpu_us_per_chunk,
        "streams_per_core": 1e6 / max(1e-9, cpu_us_per_chunk * CHUNKS_PER_STREAM_S),
        "dropped": result.dropped,
        "dropped_fraction": result.dropped / max(1, result.chunks_total),
        "errors": result.errors,
        "results_timed": result.results,
        "load_generator_cpu_us_per_chunk": result.client_cpu_s * 1e6 / max(1, result.chunks),
        "load_generator_cores": result.client_cpu_s / max(1e-9, result.measure_s),
        "send_lag_ms_p99": result.send_lag_ms_p99,
    }


def _holds(figures: dict[str, Any]) -> bool:
    return (
        figures["latency_ms_p99"] < P99_GOAL_MS
        and figures["errors"] == 0
        and figures["dropped"] == 0
        and figures["send_lag_ms_p99"] < P99_GOAL_MS
    )


def _by_area(threads_us: dict[str, float], profiled: CpuSplit) -> dict[str, float]:
    """µs per chunk by area: each profiled thread's unprofiled CPU, split as cProfile saw it.

    cProfile slows Python code more than native code, so only its fractions within a thread
    are used; threads without a profile (onnxruntime's, the default executor) stay whole.
    """
    out: dict[str, float] = {}
    names = {"event loop": "MainThread", "vad": "vad", "spool-io": "spool-io"}
    profiled_threads = {names[t] for t in profiled.areas_s if t in names}
    for thread, areas in profiled.areas_s.items():
        total = sum(areas.values())
        thread_us = threads_us.get(names.get(thread, thread), 0.0)
        for area, seconds in areas.items():
            key = f"{thread}: {area}"
            out[key] = out.get(key, 0.0) + thread_us * seconds / max(1e-12, total)
    for thread, us in threads_us.items():
        if thread not in profiled_threads:
            out[f"{thread}: (not profiled)"] = us
    return dict(sorted(((k, round(v, 1)) for k, v in out.items()), key=lambda kv: -kv[1]))


def _levels_to_search(start: int, held: bool) -> list[int]:
    """Up from ``start`` while the goal holds, or down from it until it does."""
    if held:
        return [level for level in SEARCH_LEVELS if level > start]
    return [level for level in reversed(SEARCH_LEVELS) if level < start]


def run(quick: bool, streams: int | None = None, profile: Path | None = None) -> BenchResult:
    """One level (``streams``, or the default), then — full run without ``streams`` — the search.

    ``profile``: a folder; the first level is run a second time with cProfile on in the
    gateway (its raw ``.prof`` files land there) to split the CPU per chunk by area.
    """
    level = streams or (100 if quick else 300)
    search_mode = streams is None and not quick
    warmup_s, measure_s = (3.0, 8.0) if quick else (5.0, 30.0)
    workdir = tempfile.mkdtemp(prefix="sonolake-bench-gateway-")
    try:
        gateway = _Server("gateway", workdir)
        try:
            ours = _figures(_run_load(gateway, level, warmup_s, measure_s, True))
            search: list[dict[str, Any]] = []
            if search_mode:
                going_up = _holds(ours)
                for searched in _levels_to_search(level, going_up):
                    figures = _figures(_run_load(gateway, searched, 5.0, 15.0, True))
                    search.append(figures)
                    if _holds(figures) != going_up:
                        break
            profiled = None
            if profile is not None:
                profiled = _figures(_run_load(gateway, level, warmup_s, measure_s, True, profile))
        finally:
            splits = gateway.stop()
        echo = _Server("echo", workdir)
        try:
            baseline = _figures(_run_load(echo, level, warmup_s, measure_s, False))
        finally:
            echo.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    metrics = dict(ours)
    if splits:
        metrics["cpu_us_per_chunk_by_thread"] = per_chunk_us(splits[0].threads_s, ours["chunks"])
        counted = splits[0].vad_windows
        metrics["vad_model_windows_per_chunk"] = counted.get("model", 0) / max(1, ours["chunks"])
        metrics["vad_gated_windows_per_chunk"] = counted.get("gate", 0) / max(1, ours["chunks"])
    if profiled is not None and len(splits) > 1:
        metrics["cpu_us_per_chunk_by_area"] = _by_area(
            metrics.get("cpu_us_per_chunk_by_thread", {}), splits[-1]
        )
        metrics["profiled_cpu_us_per_chunk"] = profiled["cpu_us_per_chunk"]
    if search_mode:
        held = [f["streams"] for f in [ours, *search] if _holds(f)]
        metrics["max_streams_p99_under_100ms"] = max(held) if held else 0
        metrics["search"] = [
            {
                k: f[k]
                for k in (
                    "streams",
                    "latency_ms_p99",
                    "cpu_us_per_chunk",
                    "dropped",
                    "errors",
                    "send_lag_ms_p99",
                    "load_generator_cores",
                )
            }
            for f in search
        ]
    return BenchResult(
        benchmark="gateway",
        params={
            "streams": level,
            "mode": "search" if search_mode else "one level",
            "chunk_ms": CHUNK_MS,
            "warmup_s": warmup_s,
            "measure_s": measure_s,
            "model": gateway.info["model"],
            "audio": "Speech Commands words + 1 s quiet gaps, real-time pacing",
            "spool_commit_ms": get_settings().gateway_spool_commit_ms,
            "profiled": profile is not None,
        },
        metrics=metrics,
        baseline={
            k: baseline[k]
            for k in (
                "streams",
                "chunks",
                "cpu_us_per_chunk",
                "errors",
                "load_generator_cpu_us_per_chunk",
                "load_generator_cores",
            )
        },
        ratios={
            "cpu_per_chunk_vs_echo": ours["cpu_us_per_chunk"]
            / max(1e-9, baseline["cpu_us_per_chunk"])
        },
        ok=ours["errors"] == 0 and baseline["errors"] == 0,
    )
