"""The servers the demo starts: each a child process it stops by PID, whatever happens.

Every child gets its own process group and log file under the state folder. :class:`Children`
is a context manager: leaving it (normally, on an error, on Ctrl-C or SIGTERM) sends SIGTERM
to each child still running, waits, then SIGKILLs what did not stop, so the demo never leaves
a gateway or sidecar behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

STOP_TIMEOUT_S = 15.0
"""How long a child may take to stop after SIGTERM before it is killed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildExited(RuntimeError):
    """A child process ended while the demo still needed it."""


class Child:
    """One server process: started with a log file, stopped by PID."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path):
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        self.proc = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not the child
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_alive(self) -> None:
        if not self.alive():
            code = None if self.proc is None else self.proc.returncode
            raise ChildExited(f"{self.name} exited (code {code}); see {self.log_path}")

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        return self.proc.returncode


def wait_until_listening(child: Child, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.ensure_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{child.name} did not listen on port {port} within {timeout_s:.0f} s")


def get_json(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return dict(json.loads(response.read()))


class Children:
    """The demo's child processes; all stopped on exit, also on Ctrl-C and SIGTERM."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.children: list[Child] = []
        self._previous_sigterm: Any = None
        self._previous_sigint: Any = None

    def start(self, child: Child) -> Child:
        self.children.append(child.start(self.cwd))
        return child

    def stop(self, child: Child) -> int | None:
        code = child.stop()
        if child in self.children:
            self.children.remove(child)
        return code

    def stop_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError):
                child.stop()
        self.children.clear()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __enter__(self) -> Children:
        # Both signals must interrupt, even when SIGINT was inherited as ignored (a job started
        # in the background by a non-interactive shell): Dagster maps SIGTERM onto whatever the
        # SIGINT handler is, so an ignored SIGINT would make SIGTERM ignored too.
        self._previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)
            signal.signal(signal.SIGINT, self._previous_sigint or signal.SIG_DFL)


def sonolake_command(*args: str) -> list[str]:
    """``python -m sonolake ARGS`` in this interpreter (the project's environment)."""
    return [sys.executable, "-m", "sonolake", *args]
