"""Resume across restarts and workers, a worker killed, one scrape, over real connections.

Every case runs the real ``sonolake gateway`` (one process, or ``--workers 2`` under its
supervisor) and real devices: :class:`~streaming.client.DeviceClient` or a raw WebSocket
client that resumes by hand. What was sent is checked in bronze after the real
``sonolake sidecar --once``: every chunk exactly once, with its bytes, under one session id.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from processes import GatewayProcess, child_env, run_sidecar_once
from resuming_client import chunk_bytes
from support import free_port
from websockets.asyncio.client import connect

from lake_schemas import AUDIO_CHUNKS, Lake
from streaming.client import Backoff, DeviceClient
from streaming.gateway.registry import REGISTRY_FILE

pytestmark = pytest.mark.integration

TOKEN = "worker-test-token"
CHUNK_S = 0.1


def _env(workdir: Path, cache: Path, workers: int, **extra: str) -> dict[str, str]:
    settings = {
        "state_dir": str(workdir / "state"),
        "lake_uri": str(workdir / "lake"),
        "spool_retention_s": "0",
        "auth_tokens": TOKEN,
        "gateway_serve_model": "false",
        "gateway_idle_timeout_s": "30",
        "gateway_workers": str(workers),
    }
    return child_env(cache, **{**settings, **extra})


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        health: dict[str, Any] = json.loads(answer.read())
    return health


def _wait_workers_up(port: int, workers: int, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            health = _health(port)
            if health.get("workers_up") == workers:
                return health
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{workers} workers never came up"
        time.sleep(0.2)


def _bronze(workdir: Path, env: dict[str, str]) -> dict[tuple[str, int], list[bytes]]:
    run_sidecar_once(workdir, env)
    table = Lake(workdir / "lake").read(AUDIO_CHUNKS, columns=["session_id", "seq", "pcm"])
    stored: dict[tuple[str, int], list[bytes]] = {}
    for session_id, seq, pcm in zip(
        table["session_id"].to_pylist(),
        table["seq"].to_pylist(),
        table["pcm"].to_pylist(),
        strict=True,
    ):
        stored.setdefault((session_id, seq), []).append(pcm)
    return stored


def _assert_exactly_once(
    stored: dict[tuple[str, int], list[bytes]], sent: dict[str, list[bytes]]
) -> None:
    """``sent``: session id → the chunks sent in it, seq by seq. Nothing else may be in bronze."""
    expected = {
        (sid, seq): [data] for sid, chunks in sent.items() for seq, data in enumerate(chunks)
    }
    missing = [key for key in expected if key not in stored]
    twice = [key for key, rows in stored.items() if len(rows) > 1]
    wrong = [key for key in expected if key in stored and stored[key] != expected[key]]
    extra = [key for key in stored if key not in expected]
    assert not missing and not twice and not wrong and not extra, (
        f"missing {missing[:5]}, twice {twice[:5]}, other bytes {wrong[:5]}, unknown {extra[:5]}"
    )


# ---- a restarted gateway: resume, not a second session ---------------------------------------
async def _device_through_kills(gateway: GatewayProcess, chunks: int, kill_at: list[int]) -> Any:
    device = DeviceClient(
        gateway.url,
        device_id="restart-device",
        token=TOKEN,
        backoff=Backoff(base_s=0.05, max_s=0.3),
        give_up_after_s=60,
    )
    async with device:
        for index in range(chunks):
            await device.send_audio(chunk_bytes(1, index))
            if index in kill_at:
                # some chunks are stored and not yet acknowledged when the gateway dies
                await asyncio.sleep(0.15)
                await asyncio.to_thread(gateway.kill9)
                await asyncio.to_thread(gateway.start)
            await asyncio.sleep(CHUNK_S / 4)
        totals = await device.close_stream()
    return device, totals


@pytest.mark.chaos
def test_kill_9_and_restart_a_device_resumes_its_session_and_lands_each_chunk_once(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    env = _env(tmp_path, bytecode_cache, workers=1)
    gateway = GatewayProcess(tmp_path, free_port(), env).start()
    try:
        device, totals = asyncio.run(_device_through_kills(gateway, 60, kill_at=[15, 40]))
    finally:
        gateway.stop()
    stats = device.stats
    assert stats.sessions == [device.session_id], "one session id, whatever restarted"
    assert stats.new_sessions == 0 and stats.resumes >= 2, stats
    assert totals["closed_reason"] == "close_stream"
    assert (tmp_path / "state" / "spool" / REGISTRY_FILE).exists()
    _assert_exactly_once(
        _bronze(tmp_path, env), {device.session_id: [chunk_bytes(1, i) for i in range(60)]}
    )


# ---- two workers: resumes land wherever the kernel sends them --------------------------------
class HandResumer:
    """A device that drops its connection on purpose and resumes until another worker answers."""

    def __init__(self, url: str, index: int) -> None:
        self.url, self.index = url, index
        self.session_id: str | None = None
        self.resume_token: str | None = None
        self.acked = -1
        self.sent: list[bytes] = []
        self.workers_seen: list[int] = []

    def _url(self) -> str:
        query: dict[str, Any] = {"device_id": f"hand-{self.index}"}
        if self.session_id is not None:
            query.update(
                session_id=self.session_id,
                resume_token=self.resume_token,
                resume_from=self.acked + 1,
            )
        return f"{self.url}?{urlencode(query)}"

    async def _connection(self, chunks: int, close: bool) -> int:
        """One connection: send ``chunks`` new chunks (after any unacked ones), wait for
        their Ack, then drop the link (or CloseStream); returns the worker that served it."""
        headers = {"Authorization": f"Token {TOKEN}"}
        async with connect(self._url(), additional_headers=headers, compression=None) as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "Metadata", first
            if self.session_id is None:
                self.session_id, self.resume_token = first["session_id"], first["resume_token"]
            assert first["session_id"] == self.session_id
            for data in self.sent[self.acked + 1 :]:
                await ws.send(data)
            for _ in range(chunks):
                data = chunk_bytes(100 + self.index, len(self.sent))
                self.sent.append(data)
                await ws.send(data)
            if close:
                await ws.send(json.dumps({"type": "CloseStream"}))
            while self.acked < len(self.sent) - 1 or close:
                message = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if message["type"] == "Ack":
                    self.acked = max(self.acked, int(message["seq"]))
                if message["type"] == "Metadata" and message.get("final"):
                    break
            self.workers_seen.append(int(first["worker"]))
            return int(first["worker"])

    async def run(self, moves: int, tries: int = 40) -> None:
        """Open, then resume until ``moves`` resumes landed on another worker; close."""
        await self._connection(3, close=False)
        moved = 0
        for _ in range(tries):
            before = self.workers_seen[-1]
            if await self._connection(2, close=False) != before:
                moved += 1
                if moved >= moves:
                    break
        assert moved >= moves, f"device {self.index}: workers {self.workers_seen}"
        await self._connection(1, close=True)


def _start_workers(
    tmp_path: Path, cache: Path, **extra: str
) -> tuple[GatewayProcess, dict[str, str]]:
    env = _env(tmp_path, cache, workers=2, **extra)
    gateway = GatewayProcess(tmp_path, free_port(), env).start()
    _wait_workers_up(gateway.port, 2)
    return gateway, env


def _taken_over_once_published(port: int, moved: int, within_s: float = 5.0) -> list[str]:
    """The per-worker take-over series of one scrape, once every worker's snapshot has caught
    up with ``moved`` (a peer's series are as of its last publish, up to a second old)."""
    deadline = time.monotonic() + within_s
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            taken = [
                line
                for line in answer.read().decode().splitlines()
                if line.startswith("sonolake_gateway_sessions_taken_over_total{")
            ]
        if sum(float(line.rsplit(" ", 1)[1]) for line in taken) >= moved:
            return taken
        if time.monotonic() > deadline:
            return taken
        time.sleep(0.2)


@pytest.mark.chaos
def test_resumes_on_another_worker_land_each_chunk_once(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    gateway, env = _start_workers(tmp_path, bytecode_cache)
    devices = [HandResumer(gateway.url, i) for i in range(8)]

    async def everyone() -> None:
        await asyncio.gather(*(d.run(moves=3) for d in devices))

    try:
        asyncio.run(everyone())
        moved = sum(
            a != b
            for d in devices
            for a, b in zip(d.workers_seen, d.workers_seen[1:], strict=False)
        )
        taken = _taken_over_once_published(gateway.port, moved)
    finally:
        gateway.stop()
    print(
        f"workers: {len(devices)} devices, {sum(len(d.workers_seen) for d in devices)} "
        f"connections, {moved} resumes on another worker"
    )
    assert moved >= 3 * len(devices)
    assert {'worker="0"' in line for line in taken} == {True, False}, (
        "one scrape shows both workers"
    )
    assert sum(float(line.rsplit(" ", 1)[1]) for line in taken) >= moved
    _assert_exactly_once(
        _bronze(tmp_path, env), {d.session_id: d.sent for d in devices if d.session_id}
    )


@pytest.mark.chaos
def test_a_killed_worker_is_restarted_and_its_devices_resume_elsewhere(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    gateway, env = _start_workers(tmp_path, bytecode_cache)
    health = _health(gateway.port)
    victim = next(w for w in health["workers"] if w["worker"] == 0)

    async def streaming() -> list[DeviceClient]:
        devices = [
            DeviceClient(
                gateway.url,
                device_id=f"crash-{i}",
                token=TOKEN,
                backoff=Backoff(base_s=0.05, max_s=0.3),
            )
            for i in range(8)
        ]
        for device in devices:
            await device.__aenter__()

        async def send(i: int, device: DeviceClient, chunks: range) -> None:
            for index in chunks:
                await device.send_audio(chunk_bytes(200 + i, index))
                await asyncio.sleep(CHUNK_S / 2)

        await asyncio.gather(*(send(i, d, range(0, 20)) for i, d in enumerate(devices)))
        os.kill(int(victim["pid"]), signal.SIGKILL)
        await asyncio.gather(*(send(i, d, range(20, 40)) for i, d in enumerate(devices)))
        for device in devices:
            await device.close_stream()
            await device.__aexit__()
        return devices

    try:
        devices = asyncio.run(streaming())
        deadline = time.monotonic() + 60
        while True:  # the supervisor starts worker 0 again
            after = _wait_workers_up(gateway.port, 2)
            if {w["pid"] for w in after["workers"]} & {victim["pid"]} == set():
                break
            assert time.monotonic() < deadline, f"worker 0 was not restarted: {after}"
            time.sleep(0.2)
    finally:
        gateway.stop()
    assert all(d.stats.new_sessions == 0 for d in devices), [d.stats for d in devices]
    assert sum(d.stats.resumes for d in devices) >= 1, "the killed worker's devices resumed"
    _assert_exactly_once(
        _bronze(tmp_path, env),
        {
            str(d.session_id): [chunk_bytes(200 + i, k) for k in range(40)]
            for i, d in enumerate(devices)
        },
    )


# ---- hot swap: a promoted champion reaches every worker, no connection dropped ---------------
class OpenStream:
    """A connection kept streaming through the swap; closes with CloseStream at the end."""

    def __init__(self, url: str, index: int) -> None:
        self.url, self.index = url, index
        self.worker = -1
        self.final: dict[str, Any] | None = None
        self.stop = asyncio.Event()

    async def run(self, opened: asyncio.Event) -> None:
        headers = {"Authorization": f"Token {TOKEN}"}
        url = f"{self.url}?device_id=swap-{self.index}"
        async with connect(url, additional_headers=headers, compression=None) as ws:
            first = json.loads(await ws.recv())
            self.worker = int(first["worker"])
            opened.set()

            async def drain() -> None:
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "Metadata" and message.get("final"):
                        self.final = message

            reader = asyncio.create_task(drain())
            chunk = 0
            while not self.stop.is_set():
                await ws.send(chunk_bytes(300 + self.index, chunk))
                chunk += 1
                await asyncio.sleep(CHUNK_S)
            await ws.send(json.dumps({"type": "CloseStream"}))
            await asyncio.wait_for(reader, 30)


@pytest.mark.chaos
def test_a_promoted_champion_reaches_every_worker_without_dropping_a_connection(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    from benchmarks.gateway import write_linear_bundle
    from models.registry import CHAMPION
    from sonolake import wiring
    from sonolake.settings import get_settings

    settings = get_settings(state_dir=tmp_path / "state", lake_uri=str(tmp_path / "lake"))
    registry = wiring.registry(settings)
    first = registry.log_bundle(write_linear_bundle(tmp_path / "m1", seed=1), {}, {})
    registry.set_alias(CHAMPION, first)
    second = registry.log_bundle(write_linear_bundle(tmp_path / "m2", seed=2), {}, {})
    gateway, _ = _start_workers(
        tmp_path,
        bytecode_cache,
        gateway_serve_model="true",
        serving_poll_interval_s="0.5",
    )

    def versions() -> set[Any]:
        return {w.get("model_version") for w in _health(gateway.port)["workers"]}

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 90
        while versions() != {version}:
            assert time.monotonic() < deadline, f"workers serve {versions()}, not {version}"
            time.sleep(0.2)

    async def through_the_swap() -> list[OpenStream]:
        streams: list[OpenStream] = []
        tasks = []
        while len({s.worker for s in streams}) < 2 or len(streams) < 4:
            assert len(streams) < 40, "the kernel never sent a connection to the second worker"
            stream = OpenStream(gateway.url, len(streams))
            opened = asyncio.Event()
            tasks.append(asyncio.create_task(stream.run(opened)))
            await opened.wait()
            streams.append(stream)
        registry.set_alias(CHAMPION, second)
        await asyncio.to_thread(wait_for, second)
        for stream in streams:
            stream.stop.set()
        await asyncio.gather(*tasks)
        return streams

    try:
        wait_for(first)
        streams = asyncio.run(through_the_swap())
    finally:
        gateway.stop()
    assert {s.worker for s in streams} == {0, 1}
    for stream in streams:
        assert stream.final is not None, f"stream {stream.index} lost its connection"
        assert stream.final["closed_reason"] == "close_stream"
        assert stream.final["totals"]["model_version"] == second
