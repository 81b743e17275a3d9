"""kill -9 of the real gateway at random moments while 20+ devices stream and resume.

Devices (:mod:`resuming_client`) stream unique chunks at twice real time through a real
``sonolake gateway`` process. At random moments the test kills it with SIGKILL and starts it
again on the same port; every device reconnects and resumes from its last ``Ack``: the new
process finds the session in the host's session registry, so no resume is refused and no
device needs a second session.
At the end the gateway is stopped gracefully, the real ``sonolake sidecar --once`` lands the
spool, and bronze must hold every acknowledged chunk exactly once, with its bytes.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from ledger import Audit, audit
from processes import GatewayProcess, child_env, run_sidecar_once
from resuming_client import ResumingStream
from support import free_port

from lake_schemas import AUDIO_CHUNKS, Lake

pytestmark = pytest.mark.integration

TOKENS = tuple(f"chaos-device-token-{i}" for i in range(4))
SPEED = 2.0
"""Chunks go out at twice real time (100 ms of audio every 50 ms)."""


@dataclass(frozen=True)
class KillRun:
    kills: int
    audit: Audit
    connections: int
    resumes: int
    refused_resumes: int

    def line(self) -> str:
        return (
            f"gateway kill -9: {self.kills} kills survived; {self.audit.line()}; "
            f"{self.connections} connections, {self.resumes} resumes, "
            f"{self.refused_resumes} refused resumes"
        )


def run_kills(
    workdir: Path, cache: Path, *, kills: int, streams: int, seed: int, workers: int = 1
) -> KillRun:
    rng = random.Random(seed)
    env = child_env(
        cache,
        state_dir=str(workdir / "state"),
        lake_uri=str(workdir / "lake"),
        spool_retention_s="0",
        auth_tokens=",".join(TOKENS),
        gateway_serve_model="false",
        gateway_idle_timeout_s="30",
        gateway_workers=str(workers),
    )
    gateway = GatewayProcess(workdir, free_port(), env, workers=workers).start()

    async def chaos() -> list[ResumingStream]:
        stop_sending = asyncio.Event()
        devices = [
            ResumingStream(gateway.url, i, token=TOKENS[i % len(TOKENS)], speed=SPEED)
            for i in range(streams)
        ]
        tasks = [asyncio.create_task(d.run(stop_sending)) for d in devices]
        for _ in range(kills):
            # a random moment: mid-stream, or while devices are still reconnecting
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            await asyncio.to_thread(gateway.kill9)
            await asyncio.to_thread(gateway.start)
        await asyncio.sleep(1.0)
        stop_sending.set()
        await asyncio.gather(*tasks)
        return devices

    try:
        devices = asyncio.run(chaos())
    finally:
        gateway.stop()
    run_sidecar_once(workdir, env)
    bronze = Lake(workdir / "lake").read(AUDIO_CHUNKS, columns=["session_id", "seq", "pcm"])
    reports = {d.index: d.report() for d in devices}
    assert all(r.closed_cleanly for r in reports.values()), "every device ended its stream"
    return KillRun(
        kills=kills,
        audit=audit(reports, bronze),
        connections=sum(r.connections for r in reports.values()),
        resumes=sum(r.resumes for r in reports.values()),
        refused_resumes=sum(r.refused_resumes for r in reports.values()),
    )


def _check(run: KillRun, streams: int) -> None:
    print(run.line())
    assert run.connections >= streams * (run.kills + 1), "every device came back after each kill"
    assert run.audit.acked > 0
    assert run.audit.lost == 0, run.line()
    assert run.audit.duplicates == 0, run.line()
    assert run.refused_resumes == 0, "the session registry lets every device resume"


def test_kill_9_while_20_devices_stream_loses_and_duplicates_nothing(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    run = run_kills(tmp_path, bytecode_cache, kills=2, streams=20, seed=9)
    _check(run, 20)


@pytest.mark.chaos
def test_chaos_kill_9_twelve_times_while_24_devices_stream(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    run = run_kills(tmp_path, bytecode_cache, kills=12, streams=24, seed=2026)
    _check(run, 24)


@pytest.mark.chaos
def test_chaos_kill_9_of_two_workers_eight_times_while_24_devices_stream(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    run = run_kills(tmp_path, bytecode_cache, kills=8, streams=24, seed=11, workers=2)
    _check(run, 24)
