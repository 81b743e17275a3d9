"""The gateway on every core: worker processes on one port, their supervisor, one scrape.

``sonolake gateway --workers N`` starts N worker processes, each a whole gateway (its own
event loop, spool writer in ``<spool>/worker-K/``, serving engine following the champion
alias), all listening on one port with ``SO_REUSEPORT``: the kernel spreads new connections
over them. Sessions are found by any worker through the host's session registry
(:mod:`streaming.gateway.registry`), so a resume lands correctly whichever worker accepts it.

The :class:`Supervisor` holds the port (a bound, never listening socket, so the port stays the
workers' across restarts), starts the workers, restarts one that dies (its acknowledged chunks
are in its spool folder; the new process recovers the open segment), and on SIGTERM stops
them all gracefully. Workers die with it (``PR_SET_PDEATHSIG``), even on SIGKILL.

One scrape for all (:class:`WorkerBoard`): every worker publishes its metrics text and health
to ``<folder>/worker-K.json`` once a second; ``/metrics`` on any worker merges its own live
series with the other workers' latest ones, each labelled ``worker="K"``, and ``/healthz``
lists every worker. Prometheus sums over the label (``sum without (worker) (...)``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

log = logging.getLogger("sonolake.gateway")

STALE_AFTER_S = 5.0
"""A worker whose snapshot is older than this is reported ``down`` and left out of /metrics."""
_PR_SET_PDEATHSIG = 1


# ---- one scrape for all workers ----------------------------------------------------------
class WorkerBoard:
    """Each worker's latest metrics text and health, in one folder shared by the workers."""

    def __init__(self, folder: Path, worker: int) -> None:
        self.folder = Path(folder)
        self.worker = worker

    def _path(self, worker: int) -> Path:
        return self.folder / f"worker-{worker}.json"

    def publish(self, health: dict[str, Any], metrics: bytes) -> None:
        """Write this worker's snapshot atomically (temporary file, then rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        snapshot = {
            "worker": self.worker,
            "pid": os.getpid(),
            "at": time.time(),
            "health": health,
            "metrics": metrics.decode(),
        }
        target = self._path(self.worker)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(snapshot))
        os.replace(temporary, target)

    def peers(self, now: float | None = None) -> list[dict[str, Any]]:
        """The other workers' snapshots (each with ``age_s`` and ``up``), by worker number."""
        now = time.time() if now is None else now
        found = []
        for path in sorted(self.folder.glob("worker-*.json")):
            with contextlib.suppress(OSError, ValueError):
                snapshot = json.loads(path.read_text())
                if snapshot.get("worker") == self.worker:
                    continue
                snapshot["age_s"] = round(now - float(snapshot["at"]), 3)
                snapshot["up"] = snapshot["age_s"] <= STALE_AFTER_S and _alive(snapshot["pid"])
                found.append(snapshot)
        return sorted(found, key=lambda s: int(s["worker"]))

    def health(self, own: dict[str, Any]) -> dict[str, Any]:
        """This worker's health plus every worker's (``workers``) and the host's totals."""
        workers = [{"worker": self.worker, "up": True, **own}]
        for peer in self.peers():
            workers.append({**peer["health"], "worker": peer["worker"], "up": peer["up"]})
        workers.sort(key=lambda w: int(w["worker"]))
        up = [w for w in workers if w["up"]]
        return {
            **own,
            "worker": self.worker,
            "connections": sum(int(w.get("connections", 0)) for w in up),
            "sessions": sum(int(w.get("sessions", 0)) for w in up),
            "workers_up": len(up),
            "workers": workers,
        }

    def metrics(self, own: bytes) -> bytes:
        """Every live worker's series in one exposition, each sample labelled ``worker``."""
        texts = [(self.worker, own.decode())]
        texts += [(int(p["worker"]), str(p["metrics"])) for p in self.peers() if p["up"]]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(list(merge_families(texts))))
        return generate_latest(registry)


def _alive(pid: int) -> bool:
    """Whether a process of this host has that pid (the workers share the host)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_families(texts: Iterable[tuple[int, str]]) -> Iterator[Metric]:
    """Parse each worker's exposition and join families by name, adding ``worker="K"``."""
    merged: dict[str, Metric] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(worker)}
                target.samples.append(
                    Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                )
    yield from merged.values()


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


# ---- the supervisor ------------------------------------------------------------------------
def hold_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) a ``SO_REUSEPORT`` socket: it resolves port 0 and keeps the port
    for the workers, who bind theirs beside it, across their restarts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise
    return holder


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the supervisor dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0


@dataclass
class Supervisor:
    """Run ``command(K)`` for K in 0..workers-1 and keep every one of them running."""

    workers: int
    command: Callable[[int], list[str]]
    env: dict[str, str] | None = None
    on_restart: Callable[[int, int | None], None] | None = None
    """Called with (worker, exit status) each time a dead worker is started again."""
    _workers: list[_Worker] = field(default_factory=list)

    def _start(self, worker: _Worker) -> None:
        worker.proc = subprocess.Popen(
            self.command(worker.index), env=self.env, preexec_fn=_die_with_parent
        )
        worker.started_at = time.monotonic()

    def pids(self) -> dict[int, int]:
        return {w.index: w.proc.pid for w in self._workers if w.proc is not None}

    def run(self, stop: threading.Event, poll_s: float = 0.1) -> None:
        """Start the workers, restart the dead until ``stop``, then stop them (SIGTERM)."""
        self._workers = [_Worker(k) for k in range(self.workers)]
        for worker in self._workers:
            self._start(worker)
        try:
            while not stop.wait(poll_s):
                for worker in self._workers:
                    self._revive(worker)
        finally:
            self._stop_all()

    def _revive(self, worker: _Worker) -> None:
        assert worker.proc is not None
        status = worker.proc.poll()
        if status is None:
            return
        lived_s = time.monotonic() - worker.started_at
        worker.quick_deaths = worker.quick_deaths + 1 if lived_s < 5.0 else 0
        delay_s = (
            min(5.0, 0.25 * 2 ** max(0, worker.quick_deaths - 1)) if worker.quick_deaths else 0
        )
        log.warning(
            "gateway worker %d (pid %d) exited with %s after %.1f s; restarting in %.2f s",
            worker.index,
            worker.proc.pid,
            status,
            lived_s,
            delay_s,
        )
        time.sleep(delay_s)
        worker.restarts += 1
        self._start(worker)
        if self.on_restart is not None:
            self.on_restart(worker.index, status)

    def _stop_all(self, timeout_s: float = 30.0) -> None:
        running = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("gateway worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
