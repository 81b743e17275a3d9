"""A throwaway PostgreSQL server: Debian's binaries, a temporary data folder, a free port.

``initdb`` refuses to run as root, so when the tests run as root the server runs as the
``postgres`` system user (``runuser``) in a folder it owns. Stopped by the postmaster's PID.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import free_port, wait_for_port


def postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl (newest Debian version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _run(args: list[str], as_postgres: bool) -> None:
    command = ["runuser", "-u", "postgres", "--", *args] if as_postgres else args
    subprocess.run(command, check=True, capture_output=True)


@contextmanager
def postgres_server(databases: list[str]) -> Iterator[str]:
    """Start a server, create ``databases``; yields its SQLAlchemy URL (psycopg2 driver)."""
    bin_dir = postgres_bin()
    assert bin_dir is not None
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="sonolake-pg-"))
    data = root / "data"
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], as_postgres)
    server = subprocess.Popen(
        (["runuser", "-u", "postgres", "--"] if as_postgres else [])
        + [
            str(bin_dir / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-k", str(root),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 60.0, server)
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
        for name in databases:
            for _ in range(50):  # the port opens a moment before connections are accepted
                created = subprocess.run(
                    [
                        "psql",
                        f"postgresql://postgres@127.0.0.1:{port}/postgres",
                        "-c",
                        f"CREATE DATABASE {name}",
                    ],
                    capture_output=True,
                    check=False,
                )
                if created.returncode == 0:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(created.stderr.decode())
        yield url
    finally:
        pid_file = data / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else server.pid
        os.kill(pid, signal.SIGINT)  # fast shutdown of the postmaster (by PID): clients are cut
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
