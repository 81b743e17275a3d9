"""A real ``sonolake serve`` for the endpoint tests: a registry with two versions, a child process.

Version 1 (the weak tone model) is the champion, version 2 (the good one) the challenger, so
the version a response names can be checked against what that version computes in process.
Real recordings are copied from ``../shared/data`` into the test's folder at run time.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from support import ServerProcess, free_port, python_module

from features import fit_windows
from features.corpus import load_audio, read_manifest
from sonolake import wiring
from sonolake.settings import Settings

MODEL = "audio-event-classifier"
READY_TIMEOUT_S = 180.0
"""Start-up imports KServe and MLflow: tens of seconds on a busy two-core machine."""


@dataclass
class Endpoint:
    """A running endpoint, the registry it follows and the bundles of its versions."""

    process: ServerProcess
    http_port: int
    grpc_port: int
    settings: Settings
    bundles: dict[str, Path]

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def registry(self):  # type: ignore[no-untyped-def]
        return wiring.registry(self.settings)

    def restart(self) -> None:
        """Start the same command on the same ports again (after it was stopped or killed)."""
        old = self.process
        self.process = ServerProcess(
            old.args, old.port, env=old.env, log_path=old.log_path, ready_timeout_s=READY_TIMEOUT_S
        )
        self.process.env = old.env
        self.process.start()
        wait_until_ready(self.http_url, self.process, READY_TIMEOUT_S)


def endpoint_settings(root: Path) -> Settings:
    return Settings(_env_file=None, state_dir=root / "state", lake_uri=str(root / "lakehouse"))


def register_two_versions(settings: Settings, weak: Path, good: Path) -> dict[str, Path]:
    registry = wiring.registry(settings)
    v1 = registry.log_bundle(weak, {}, {})
    registry.set_alias("champion", v1)
    v2 = registry.log_bundle(good, {}, {})
    registry.set_alias("challenger", v2)
    assert (v1, v2) == ("1", "2")
    return {"1": weak, "2": good}


def wait_until_ready(http_url: str, process: ServerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.proc is not None and process.proc.poll() is None, "sonolake serve exited"
        try:
            if (
                httpx.get(f"http://{http_url}/v2/models/{MODEL}/ready", timeout=2).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the endpoint was not ready within {timeout_s} s")


@contextmanager
def running_endpoint(root: Path, weak: Path, good: Path, poll_s: float = 0.3) -> Iterator[Endpoint]:
    """``sonolake serve`` on free loopback ports over a fresh registry; stopped by PID."""
    settings = endpoint_settings(root)
    bundles = register_two_versions(settings, weak, good)
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")}
    env.update(
        SONOLAKE_STATE_DIR=str(root / "state"),
        SONOLAKE_LAKE_URI=str(root / "lakehouse"),
        SONOLAKE_SERVING_POLL_INTERVAL_S=str(poll_s),
        SONOLAKE_SERVING_MAX_WAIT_US="1000",
    )
    process = ServerProcess(
        python_module(
            "sonolake", "serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)
        ),
        http_port,
        env=env,
        log_path=root / "serve.log",
        ready_timeout_s=READY_TIMEOUT_S,
    )
    process.env = env  # exactly these variables: none of the test process's SONOLAKE_ ones
    endpoint = Endpoint(process, http_port, grpc_port, settings, bundles)
    try:
        process.start()
        wait_until_ready(f"127.0.0.1:{http_port}", process, READY_TIMEOUT_S)
        yield endpoint
    finally:
        endpoint.process.stop()


def real_windows(shared_data: Path, into: Path, count: int = 8) -> tuple[np.ndarray, list[str]]:
    """``count`` real Speech Commands clips (copied into ``into``), one per label where possible,
    as 1-s float32 windows with their labels."""
    clips = read_manifest(shared_data / "speech_commands" / "manifest.csv")
    chosen, seen = [], set()
    for clip in clips:
        if clip.label not in seen:
            seen.add(clip.label)
            chosen.append(clip)
        if len(chosen) == count:
            break
    into.mkdir(parents=True, exist_ok=True)
    copies = [Path(shutil.copy(clip.path, into / clip.path.name)) for clip in chosen]
    return fit_windows([load_audio(path) for path in copies]), [c.label for c in chosen]
