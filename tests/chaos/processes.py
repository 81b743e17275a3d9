"""Real `sonolake gateway` and `sonolake sidecar` processes for the chaos tests.

Each process gets its settings through ``SONOLAKE_*`` variables only (nothing inherited), runs
in the test's folder, and is stopped by its PID: SIGKILL for a crash, SIGTERM for a graceful
stop. ``PYTHONPATH`` points at this checkout, so the code under test is what runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support import REPO_ROOT, stop_process, wait_for_port


def child_env(cache: Path, **settings: str) -> dict[str, str]:
    """A child's environment: no inherited SONOLAKE_* values, these instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update({f"SONOLAKE_{k.upper()}": v for k, v in settings.items()})
    return env


@dataclass
class GatewayProcess:
    """``sonolake gateway`` on a fixed port; killed and started again as often as a test likes."""

    workdir: Path
    port: int
    env: dict[str, str]
    preexec_fn: Callable[[], None] | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)
    workers: int = 1
    """``SONOLAKE_GATEWAY_WORKERS`` of ``env``: start() waits for each worker when > 1."""
    worker_pids: set[int] = field(default_factory=set)
    dead_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/listen"

    def start(self, timeout_s: float = 60) -> GatewayProcess:
        log_path = self.workdir / f"gateway-{self.starts}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sonolake", "gateway", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,  # resource limits only (the test has threads)
            )
        self.starts += 1
        wait_for_port(self.port, timeout_s, self.proc)
        if self.workers > 1:
            self._wait_for_workers(timeout_s)
        return self

    def _wait_for_workers(self, timeout_s: float) -> None:
        """Under ``--workers N``: until every worker of this start answers (the port may
        still be held by workers of the killed supervisor for a moment)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, ValueError):
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    health = json.loads(answer.read())
                pids = {w["pid"] for w in health.get("workers", []) if w.get("up")}
                if len(pids) == self.workers and not pids & self.dead_pids:
                    self.worker_pids = pids
                    return
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise RuntimeError(f"{self.workers} gateway workers did not come up")
            time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL the gateway (under ``--workers N``: its supervisor, and the workers die
        with it)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.dead_pids |= self.worker_pids

    def stop(self, timeout_s: float = 30) -> int | None:
        """Graceful stop (SIGTERM: sessions ended, spool sealed); SIGKILL if it hangs."""
        return stop_process(self.proc, timeout_s)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


def run_sidecar_once(workdir: Path, env: dict[str, str], timeout_s: float = 300) -> list[str]:
    """``sonolake sidecar --once``: land everything sealed; its output lines (raises on failure)."""
    proc = subprocess.run(
        [sys.executable, "-m", "sonolake", "sidecar", "--once"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sidecar exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc.stdout.splitlines()


RELAY_SCRIPT = Path(__file__).with_name("s3_relay.py")


@dataclass
class S3Relay:
    """:mod:`s3_relay` in its own process on a fixed port in front of an S3 server: killed by
    its PID for an outage of the endpoint, started again on the same port."""

    workdir: Path
    port: int
    target_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    lost_responses: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, lose_response_of: str | None = None) -> S3Relay:
        """Listen again; with ``lose_response_of`` (a regex of request lines) the relay dies
        the moment the server answers the first matching request (see :mod:`s3_relay`)."""
        args = [sys.executable, str(RELAY_SCRIPT), str(self.port), str(self.target_port)]
        if lose_response_of:
            args += ["--lose-response-of", lose_response_of]
        log = open(self.workdir / f"relay-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        wait_for_port(self.port, 30, self.proc)
        return self

    def kill9(self) -> None:
        """The endpoint vanishes: every open connection is reset, new ones are refused."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._reap()

    def wait_for_lost_response(self, timeout_s: float) -> bool:
        """True once the relay lost a response and died; False if none came within the time."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        self._reap()
        return True

    def _reap(self) -> None:
        if self.proc is None:
            return
        self.proc.wait(timeout=30)
        log = self.workdir / f"relay-{self.starts - 1}.log"
        self.lost_responses += [
            line.removeprefix("lost response of ")
            for line in log.read_text(errors="replace").splitlines()
            if line.startswith("lost response of ")
        ]
        self.proc = None
