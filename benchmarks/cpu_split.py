"""Where a server process spends its CPU: per-thread CPU time and a cProfile split by area.

Used by ``python -m benchmarks gateway`` inside the gateway's own process, over the measured
window only. Two views, because each misleads alone:

- **Threads** (:func:`thread_cpu_s`): user + system CPU seconds of every OS thread of this
  process, from ``/proc/self/task`` (10-ms ticks; exact enough over a window of seconds), named
  by the Python thread that owns it (``vad``, ``spool-io``, ``MainThread`` …); threads Python
  did not start (onnxruntime's pools) appear as ``native``. No overhead.
- **Areas** (:class:`AreaProfiler`): cProfile on the event-loop thread and on chosen executor
  threads (timed by each thread's CPU clock), each function's own time grouped into the
  areas of :data:`AREAS` by source file.
  Built-in functions (a socket ``send``, ``numpy.concatenate``) are charged to the area of the
  Python function that called them. cProfile roughly doubles the cost of Python code and not
  of native code, so read its figures as a split (fractions), not as absolute costs.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import re
import threading
import time
from collections import defaultdict
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

AREAS: tuple[tuple[str, str], ...] = (
    ("websockets/", "websockets framing"),
    ("asyncio/", "event loop"),
    ("selectors.py", "event loop"),
    ("socket.py", "event loop"),
    ("json/", "json"),
    ("streaming/gateway/protocol.py", "json"),
    ("streaming/gateway/processing.py", "VAD glue"),
    ("streaming/vad.py", "VAD (Silero + gate)"),
    ("onnxruntime/", "VAD (Silero + gate)"),
    ("streaming/endpointing.py", "endpointer"),
    ("streaming/gateway/session.py", "session: seq, decode, buffer"),
    ("features/pcm.py", "session: seq, decode, buffer"),
    ("streaming/gateway/server.py", "receive path"),
    ("streaming/gateway/quota.py", "receive path"),
    ("streaming/gateway/spooling.py", "spool hand-off"),
    ("streaming/gateway/stream.py", "spool hand-off"),
    ("streaming/spool/", "spool write (Arrow + fsync)"),
    ("pyarrow/", "spool write (Arrow + fsync)"),
    ("streaming/gateway/results.py", "results + outbox"),
    ("streaming/gateway/outbox.py", "results + outbox"),
    ("streaming/gateway/metrics.py", "metrics"),
    ("logging/", "logging"),
    ("models/", "inference"),
    ("features/", "inference"),
)
"""(path fragment, area): the first fragment found in a function's file names its area."""


def area_of(filename: str) -> str:
    """The area of a source file (``other`` when none of :data:`AREAS` matches)."""
    path = filename.replace(os.sep, "/")
    for fragment, area in AREAS:
        if fragment in path:
            return area
    return "other"


def _thread_names() -> dict[int, str]:
    """OS thread id → Python thread name without its pool index (``vad_0`` → ``vad``)."""
    names = {}
    for thread in threading.enumerate():
        if thread.native_id is not None:
            names[thread.native_id] = re.sub(r"_\d+$", "", thread.name)
    return names


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of this process's threads so far, summed by thread name."""
    names = _thread_names()
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
        out[names.get(int(tid), "native")] += cpu
    return dict(out)


def thread_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each thread group used between two :func:`thread_cpu_s` readings."""
    return {
        name: after.get(name, 0.0) - before.get(name, 0.0)
        for name in sorted(set(before) | set(after))
        if after.get(name, 0.0) - before.get(name, 0.0) > 0
    }


def split_by_area(stats: pstats.Stats) -> dict[str, float]:
    """Own time (s) per area; a built-in's time goes to the areas of its Python callers."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, own_s, _cum_s, callers) in raw.items():
        if filename != "~":
            out[area_of(filename)] += own_s
            continue
        charged = 0.0
        for (caller_file, _l, _n), caller_stats in callers.items():
            share = caller_stats[2]  # own time of the built-in when called from this caller
            out[area_of(caller_file) if caller_file != "~" else "other"] += share
            charged += share
        if own_s > charged:
            out["other"] += own_s - charged
    return dict(out)


class AreaProfiler:
    """cProfile on the calling (event-loop) thread and on each given single-thread executor."""

    def __init__(self, executors: dict[str, Executor]) -> None:
        self.executors = executors
        # CPU time of the profiled thread, not wall time: waiting for work or for the GIL
        # (hashlib and onnxruntime release it) must not count as the waiting function's cost.
        self.profiles: dict[str, cProfile.Profile] = {
            "event loop": cProfile.Profile(time.thread_time)
        }
        self.profiles.update({name: cProfile.Profile(time.thread_time) for name in executors})

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, executor in self.executors.items():
            await loop.run_in_executor(executor, self.profiles[name].enable)
        self.profiles["event loop"].enable()

    async def stop(self) -> None:
        self.profiles["event loop"].disable()
        loop = asyncio.get_running_loop()
        for name, executor in self.executors.items():
            await loop.run_in_executor(executor, self.profiles[name].disable)

    def split(self) -> dict[str, dict[str, float]]:
        """{thread: {area: own seconds}} over the profiled span."""
        return {
            thread: split_by_area(pstats.Stats(profile))
            for thread, profile in self.profiles.items()
            if _has_data(profile)
        }

    def dump(self, folder: Path) -> list[Path]:
        """Each thread's raw profile as ``<thread>.prof`` (``python -m pstats`` reads it)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for thread, profile in self.profiles.items():
            if _has_data(profile):
                path = folder / f"{thread.replace(' ', '-')}.prof"
                profile.dump_stats(path)
                paths.append(path)
        return paths


def _has_data(profile: cProfile.Profile) -> bool:
    profile.create_stats()
    return bool(profile.stats)


def per_chunk_us(seconds: dict[str, float], chunks: int) -> dict[str, float]:
    """Seconds → µs per chunk, rounded to 0.1 µs, largest first."""
    scaled = {k: round(v * 1e6 / max(1, chunks), 1) for k, v in seconds.items()}
    return dict(sorted(scaled.items(), key=lambda item: -item[1]))
