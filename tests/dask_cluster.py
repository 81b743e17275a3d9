"""A real Dask cluster for tests: a ``dask scheduler`` and ``dask worker`` processes on loopback.

Each process is started by the test on a free port and stopped (or killed) by its PID. Workers
run without a nanny, so the PID a test kills is the worker itself; they import the project from
this checkout (``PYTHONPATH``), as a deployment's workers run the same image as the sidecar.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from support import REPO_ROOT, ServerProcess, free_port

DASK = str(Path(sys.executable).with_name("dask"))
WORKER = ("--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "0")
"""One task at a time per worker; no nanny, so a test's SIGKILL hits the worker itself."""


def executed_count(dask_worker: Any) -> int:
    """Run on a worker (``Client.run``): how many tasks it has executed."""
    return int(dask_worker.state.executed_count)


class DaskCluster:
    """One scheduler and ``workers`` single-threaded workers, each its own process."""

    def __init__(
        self,
        logs: Path,
        workers: int = 2,
        pycache: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.n_workers = workers
        tests = Path(__file__).resolve().parent  # the helpers a test runs on the workers
        self.env = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(tests)])}
        if pycache is not None:  # compiled modules shared by every worker (Beam is large)
            self.env |= {"PYTHONPYCACHEPREFIX": str(pycache), "PYTHONDONTWRITEBYTECODE": ""}
        self.env |= dict(env or {})
        self.scheduler: ServerProcess | None = None
        self.workers: list[ServerProcess] = []

    # ------------------------------------------------------------------ processes
    def start(self) -> DaskCluster:
        self.start_scheduler()
        for _ in range(self.n_workers):
            self.start_worker()
        self.wait_for_workers(self.n_workers)
        return self

    def start_scheduler(self) -> None:
        args = [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port)]
        self.scheduler = ServerProcess(
            [*args, "--no-dashboard"],
            self.port,
            env=self.env,
            log_path=self.logs / "scheduler.log",
        ).start()

    def start_worker(self) -> ServerProcess:
        port = free_port()
        worker = ServerProcess(
            [
                DASK,
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--worker-port",
                str(port),
                *WORKER,
            ],
            port,
            env=self.env,
            log_path=self.logs / f"worker-{len(self.workers)}.log",
        ).start()
        self.workers.append(worker)
        return worker

    def kill(self, process: ServerProcess, sig: int = signal.SIGKILL) -> None:
        os.kill(process.pid, sig)
        if sig == signal.SIGKILL:
            assert process.proc is not None
            process.proc.wait(timeout=10)

    def stop_scheduler(self) -> None:
        """Stop the scheduler; its workers end with it (Dask workers do not outlive it)."""
        assert self.scheduler is not None
        self.kill(self.scheduler)
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.scheduler is not None:
            self.scheduler.stop()

    # ------------------------------------------------------------------ inspection
    def client(self) -> Any:
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def wait_for_workers(self, n: int) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=60)

    def executed_counts(self) -> dict[str, int]:
        """Tasks each connected worker has executed, by worker address."""
        with self.client() as client:
            return dict(client.run(executed_count))

    def worker_address(self, worker: ServerProcess) -> str:
        return f"tcp://127.0.0.1:{worker.port}"
