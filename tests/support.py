"""Helpers the test suites share: free loopback ports and real server processes.

A test that needs a server starts it itself on a free loopback port and stops it by PID, so the
suite runs on a bare machine with nothing else listening.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_s} s")


def stop_process(proc: subprocess.Popen | None, timeout_s: float) -> int | None:
    """Stop a child by its PID: SIGTERM (a graceful stop), SIGKILL if it hangs; its exit code."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=timeout_s)


class ServerProcess:
    """A real server in a child process: started on a port, stopped by PID (TERM, then KILL)."""

    def __init__(
        self,
        args: Sequence[str],
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.args = list(args)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd or REPO_ROOT
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, self.ready_timeout_s, self.proc)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return stop_process(self.proc, timeout_s)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    """Command line that runs ``python -m module args`` in this interpreter."""
    return [sys.executable, "-m", module, *args]


MOTO_KEY_ID = "testing"
MOTO_SECRET = "testing-secret"
"""Credentials every moto server of the suite accepts (moto checks none)."""


def moto_client(endpoint: str, service: str = "s3") -> Any:
    """A boto3 client of a moto server started by :func:`moto_server`."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=MOTO_KEY_ID,
        aws_secret_access_key=MOTO_SECRET,
        region_name="us-east-1",
    )


@contextlib.contextmanager
def moto_server(log_dir: Path, bucket: str) -> Iterator[str]:
    """moto's S3 server on a free loopback port with ``bucket`` created; yields its endpoint
    and stops the server by PID on exit."""
    port = free_port()
    with ServerProcess(
        python_module("moto.server", "-p", str(port), "-H", "127.0.0.1"),
        port,
        log_path=log_dir / "moto.log",
    ):
        endpoint = f"http://127.0.0.1:{port}"
        moto_client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
