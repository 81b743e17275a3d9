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
The full run then raises the stream count until p99 latency reaches 100 ms (or anything is
dropped or fails) and reports the most streams held under it.
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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import BenchResult, percentiles
from models.dataset import LABELS

CHUNK_MS = 100
CHUNK_SAMPLES = 1600
P99_GOAL_MS = 100.0
SEARCH_UP = (750, 1000, 1250, 1500, 2000, 2500, 3000)
SEARCH_DOWN = (400, 300, 200, 150, 100, 50, 25)


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
    from sonolake.settings import get_settings

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
    async with SpoolWriter(Path(workdir) / "spool", commit_interval_ms=10.0) as spool:
        gateway = Gateway(config, spool=spool, engine=engine)
        await gateway.start()
        conn.send({"port": gateway.port, "pid": os.getpid(), "model": model})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await gateway.stop()
    engine.close()
    conn.send({"stopped": True})


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
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    conn.send({"stopped": True})


def _server_main(conn: Connection, kind: str, workdir: str) -> None:
    _raise_fd_limit()
    if kind == "gateway":
        asyncio.run(_serve_gateway(conn, workdir))
    else:
        asyncio.run(_serve_echo(conn))


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
    error_samples: list[str] = field(default_factory=list)


def _stream_audio(streams: int, seconds: float) -> list[bytes]:
    """Per stream, PCM16 bytes of real words and quiet gaps (20 distinct sequences, rotated)."""
    from benchmarks.vad import fleet_audio

    distinct = fleet_audio(min(streams, 20), seconds)
    return [distinct[i % len(distinct)].tobytes() for i in range(streams)]


async def _load(
    url: str, streams: int, warmup_s: float, measure_s: float, server_pid: int, expect_results: bool
) -> LoadResult:
    import psutil
    from websockets.asyncio.client import connect

    audio = _stream_audio(streams, warmup_s + measure_s + 2)
    result = LoadResult(streams=streams)
    server = psutil.Process(server_pid)
    me = psutil.Process()
    start = time.perf_counter() + 1.0
    window = (start + warmup_s, start + warmup_s + measure_s)
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
    result = asyncio.run(_load(url, streams, warmup_s, measure_s, server_pid, expect_results))
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

    def stop(self) -> None:
        self.conn.send("stop")
        self.conn.poll(60)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def _run_load(
    server: _Server, streams: int, warmup_s: float, measure_s: float, expect_results: bool
) -> LoadResult:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=_load_main,
        args=(child, server.url, streams, warmup_s, measure_s, server.info["pid"], expect_results),
        daemon=True,
    )
    process.start()
    if not parent.poll(warmup_s + measure_s + 180):
        process.kill()
        raise RuntimeError("the load generator did not finish in time")
    result: LoadResult = parent.recv()
    process.join(30)
    return result


def _figures(result: LoadResult) -> dict[str, Any]:
    pct = percentiles(result.latencies_ms, 50, 95, 99)
    return {
        "streams": result.streams,
        "chunks": result.chunks,
        "latency_ms_p50": pct["p50"],
        "latency_ms_p95": pct["p95"],
        "latency_ms_p99": pct["p99"],
        "cpu_us_per_chunk": result.server_cpu_s * 1e6 / max(1, result.chunks),
        "dropped": result.dropped,
        "dropped_fraction": result.dropped / max(1, result.chunks_total),
        "errors": result.errors,
        "results_timed": result.results,
        "load_generator_cpu_us_per_chunk": result.client_cpu_s * 1e6 / max(1, result.chunks),
        "send_lag_ms_p99": result.send_lag_ms_p99,
    }


def _holds(figures: dict[str, Any]) -> bool:
    return (
        figures["latency_ms_p99"] < P99_GOAL_MS
        and figures["errors"] == 0
        and figures["dropped"] == 0
        and figures["send_lag_ms_p99"] < P99_GOAL_MS
    )


def run(quick: bool) -> BenchResult:
    streams = 100 if quick else 500
    warmup_s, measure_s = (3.0, 8.0) if quick else (5.0, 30.0)
    workdir = tempfile.mkdtemp(prefix="sonolake-bench-gateway-")
    try:
        gateway = _Server("gateway", workdir)
        try:
            ours = _figures(_run_load(gateway, streams, warmup_s, measure_s, True))
            search: list[dict[str, Any]] = []
            if not quick:
                # Up while the goal holds, or down until it does: the most streams held.
                going_up = _holds(ours)
                for level in SEARCH_UP if going_up else SEARCH_DOWN:
                    figures = _figures(_run_load(gateway, level, 5.0, 15.0, True))
                    search.append(figures)
                    if _holds(figures) != going_up:
                        break
        finally:
            gateway.stop()
        echo = _Server("echo", workdir)
        try:
            baseline = _figures(_run_load(echo, streams, warmup_s, measure_s, False))
        finally:
            echo.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    held = [f["streams"] for f in [ours, *search] if _holds(f)]
    metrics = dict(ours)
    if not quick:
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
                )
            }
            for f in search
        ]
    return BenchResult(
        benchmark="gateway",
        params={
            "streams": streams,
            "chunk_ms": CHUNK_MS,
            "warmup_s": warmup_s,
            "measure_s": measure_s,
            "model": gateway.info["model"],
            "audio": "Speech Commands words + 1 s quiet gaps, real-time pacing",
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
            )
        },
        ratios={
            "cpu_per_chunk_vs_echo": ours["cpu_us_per_chunk"]
            / max(1e-9, baseline["cpu_us_per_chunk"])
        },
        ok=ours["errors"] == 0 and baseline["errors"] == 0,
    )
