"""``sidecar_dask``: the sidecar's micro-batches in process vs on a Dask cluster of 1 and 2 workers.

The workload is the ``sidecar`` benchmark's throughput phase (benchmarks/sidecar.py: a spool
of streams × seconds of 100-ms chunks landed in four micro-batches), landed three ways in one
run: Beam's in-process runner (the baseline), then ``SidecarDaskRunner`` on a Dask
``LocalCluster`` of 1 and of 2 worker processes (one thread each, loopback TCP, started here).

- ``chunks_per_s`` and ``cpu_us_per_chunk`` (the driver's CPU plus the workers').
- **Per-batch overhead**: one small batch (10 streams × 1 s, one segment) landed several times
  each way; ``small_batch_s_p50`` per runner, and their difference is what the distributed
  runner adds to every batch (client, graph, scheduling, transfers). A batch pays for Dask
  once its work on the cluster saves more than that.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchResult, progress
from benchmarks.sidecar import _sidecar, _throughput, _warm_up, _write_ticks

QUICK = {"streams": 100, "seconds": 10, "small_batches": 3}
FULL = {"streams": 500, "seconds": 10, "small_batches": 5}
RUNNERS = (("in_process", 0), ("dask_1", 1), ("dask_2", 2))


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _workers_cpu_s(client: Any) -> float:
    return float(sum(client.run(_own_cpu_s).values()))


def _small_batches(root: Path, n: int, scheduler: str | None) -> list[float]:
    """Seconds of ``n`` one-segment batches, each from a fresh spool and lake."""
    seconds = []
    for i in range(n):
        spool_root = root / f"small-{i}"
        asyncio.run(
            _write_ticks(spool_root / "spool", 10, 1.0, paced=False, max_segment_age_s=60.0)
        )
        sidecar = _sidecar(spool_root, dask_scheduler=scheduler)
        started = time.perf_counter()
        while sidecar.land_once() is not None:
            pass
        seconds.append(time.perf_counter() - started)
    return seconds


def _measure(root: Path, sizes: dict[str, int], workers: int) -> dict[str, Any]:
    if workers == 0:
        _small_batches(root / "warm", 1, None)
        tp = _throughput(root / "tp", sizes["streams"], sizes["seconds"])
        small = _small_batches(root / "small", sizes["small_batches"], None)
        return {**tp, "workers_cpu_s": 0.0, "small": small}
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        address = cluster.scheduler_address
        _small_batches(root / "warm", 1, address)  # worker imports and VAD load, off the clock
        cpu0 = _workers_cpu_s(client)
        tp = _throughput(root / "tp", sizes["streams"], sizes["seconds"], address)
        workers_cpu = _workers_cpu_s(client) - cpu0
        small = _small_batches(root / "small", sizes["small_batches"], address)
    return {**tp, "workers_cpu_s": workers_cpu, "small": small}


def run(quick: bool) -> BenchResult:
    sizes = QUICK if quick else FULL
    _warm_up()
    result = BenchResult(benchmark="sidecar_dask", params=dict(sizes))
    measured: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sonolake-bench-dask-") as tmp,
        progress() as bar,
    ):
        task = bar.add_task("sidecar_dask", total=len(RUNNERS))
        for name, workers in RUNNERS:
            measured[name] = _measure(Path(tmp) / name, sizes, workers)
            bar.advance(task)
    base = measured["in_process"]
    base_rate = base["chunks"] / base["wall_s"]
    base_small = statistics.median(base["small"])
    for name, m in measured.items():
        rate = m["chunks"] / m["wall_s"]
        small = statistics.median(m["small"])
        cpu = m["cpu_s"] + m["workers_cpu_s"]
        result.metrics |= {
            f"{name}_chunks_per_s": rate,
            f"{name}_cpu_us_per_chunk": cpu / m["chunks"] * 1e6,
            f"{name}_small_batch_s_p50": small,
        }
        if name != "in_process":
            result.ratios[f"{name}_throughput_vs_in_process"] = rate / base_rate
            result.metrics[f"{name}_overhead_s_per_batch"] = small - base_small
    result.metrics["chunks"] = base["chunks"]
    result.metrics["batches"] = base["batches"]
    result.metrics["duplicates"] = sum(m["duplicates"] for m in measured.values())
    result.metrics["lost"] = sum(m["lost"] for m in measured.values())
    result.baseline = {
        "in_process_chunks_per_s": base_rate,
        "in_process_small_batch_s_p50": base_small,
    }
    result.ok = result.metrics["duplicates"] == 0 and result.metrics["lost"] == 0
    if not result.ok:
        result.error = "chunks were duplicated or lost"
    return result
