"""The resuming device client: a dropped link, a gateway killed mid-stream, a full gateway.

The default test cuts the client's TCP connection (a relay between it and a live gateway)
mid-stream; the client resumes on its own and the spool holds every chunk once. The long
variant (marker ``chaos``: two gateway process starts and a sidecar run, about a minute)
runs ``sonolake gateway`` as a real process, kills it with SIGKILL while the client streams,
starts a new one on the same port and spool, and lands the spool with the real sidecar:
bronze holds every chunk once, bytes and label intact.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import Relay, chunks, open_ws
from support import ServerProcess, free_port, python_module

from streaming.client import Backoff, ClientError, DeviceClient

pytestmark = pytest.mark.integration

FAST = Backoff(base_s=0.05, max_s=0.5)


def _frames(count: int, seed: int) -> list[bytes]:
    """Distinct 100 ms chunks of noise (so each chunk's bytes identify it)."""
    noise = np.random.default_rng(seed).normal(0, 800, 1600 * count).astype(np.int16)
    return chunks(noise)


def test_client_resumes_after_a_dropped_link_and_the_spool_holds_every_chunk_once(
    make_gateway: Any,
) -> None:
    gateway = make_gateway()
    frames = _frames(40, seed=3)

    async def stream() -> tuple[DeviceClient, Relay]:
        relay = Relay(gateway.port)
        port = await relay.start()
        client = DeviceClient(
            f"ws://127.0.0.1:{port}/v1/listen",
            device_id="dropper",
            token="test-token",
            backoff=FAST,
        )
        try:
            async with client:
                await client.label("no")
                for index, frame in enumerate(frames):
                    await client.send_audio(frame)
                    await asyncio.sleep(0.005)
                    if index in (15, 28):
                        relay.cut()
                await client.close_stream()
        finally:
            await relay.stop()
        return client, relay

    client, relay = asyncio.run(stream())
    assert relay.accepted >= 3 and client.stats.resumes >= 2
    assert client.stats.close_code == 1000 and client.unacked == 0
    assert len(client.stats.sessions) == 1
    stored = [r for r in gateway.stored().to_pylist() if r["device_id"] == "dropper"]
    chunks_stored = sorted((r for r in stored if r["kind"] == "chunk"), key=lambda r: r["seq"])
    assert [r["seq"] for r in chunks_stored] == list(range(len(frames))), "each chunk once"
    assert [r["pcm"] for r in chunks_stored] == frames
    assert {r["label"] for r in chunks_stored} == {"no"}
    totals = [r for r in stored if r["kind"] == "session_end"]
    assert len(totals) == 1


def _gateway(tmp_path: Path, port: int) -> ServerProcess:
    env = {
        "SONOLAKE_STATE_DIR": str(tmp_path / "state"),
        "SONOLAKE_GATEWAY_SERVE_MODEL": "false",
        "SONOLAKE_AUTH_TOKENS": "",
    }
    return ServerProcess(
        python_module("sonolake", "gateway", "--port", str(port)),
        port,
        env=env,
        log_path=tmp_path / "gateway.log",
    )


def _land(tmp_path: Path) -> list[dict[str, Any]]:
    """Land the spool into a fresh lake with the real sidecar; bronze rows."""
    from lake_schemas import AUDIO_CHUNKS, Lake
    from streaming.sidecar.driver import Sidecar, SidecarConfig

    lake = Lake(tmp_path / "lake")
    config = SidecarConfig(
        spool_dir=tmp_path / "state" / "spool", state_dir=tmp_path / "sidecar", retention_s=0.0
    )
    sidecar = Sidecar(lake, config)
    while sidecar.land_once() is not None:
        pass
    return list(lake.read(AUDIO_CHUNKS).to_pylist())


@pytest.mark.chaos
def test_client_resumes_after_the_gateway_is_killed_and_every_chunk_lands_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    frames = _frames(60, seed=1)
    servers = [_gateway(tmp_path, port).start()]

    async def stream() -> DeviceClient:
        client = DeviceClient(
            f"ws://127.0.0.1:{port}/v1/listen",
            device_id="resumer",
            params={"encoding": "linear16", "sample_rate": 16000},
            backoff=FAST,
            give_up_after_s=60,
        )
        async with client:
            await client.label("yes")
            for index, frame in enumerate(frames):
                await client.send_audio(frame)
                await asyncio.sleep(0.01)
                if index == 30:
                    while client.acked < 10:  # some acknowledged, some not, when it dies
                        await asyncio.sleep(0.01)
                    os.kill(servers[0].pid, signal.SIGKILL)
                    await asyncio.to_thread(servers[0].proc.wait)  # type: ignore[union-attr]
                    servers.append(await asyncio.to_thread(_gateway(tmp_path, port).start))
            await client.close_stream()
        return client

    try:
        client = asyncio.run(stream())
    finally:
        for server in servers:
            server.stop()
    assert client.stats.resumes >= 1 and client.stats.resent_chunks > 0
    assert client.stats.close_code == 1000 and client.unacked == 0
    assert len(client.stats.sessions) == 1, "the session continued under its id"
    rows = sorted(
        (r for r in _land(tmp_path) if r["device_id"] == "resumer"), key=lambda r: r["seq"]
    )
    assert [r["seq"] for r in rows] == list(range(len(frames))), "every chunk landed once"
    assert [r["pcm"] for r in rows] == frames
    assert {r["label"] for r in rows} == {"yes"}, "resent chunks carry their label"


def test_client_backs_off_while_the_gateway_is_full(make_gateway: Any) -> None:
    gateway = make_gateway(max_sessions=1)
    blocker = open_ws(gateway.url("device_id=blocker"))
    frames = _frames(5, seed=2)

    def end_blocker() -> None:  # a session that ends (not merely disconnects) frees its slot
        blocker.send(json.dumps({"type": "CloseStream"}))
        blocker.close()

    async def stream() -> DeviceClient:
        client = DeviceClient(
            f"ws://127.0.0.1:{gateway.port}/v1/listen",
            device_id="patient",
            token="test-token",
            backoff=FAST,
        )

        async def free_the_slot_once_refused() -> None:
            # After a refusal, not after a fixed time: a busy machine may connect late.
            deadline = time.monotonic() + 20.0
            while client.stats.overloaded_retries < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            end_blocker()

        freeing = asyncio.create_task(free_the_slot_once_refused())
        async with client:
            for frame in frames:
                await client.send_audio(frame)
            await client.close_stream()
        await freeing
        return client

    client = asyncio.run(stream())
    assert client.stats.overloaded_retries >= 1 and client.stats.close_code == 1000
    stored = [r for r in gateway.stored().to_pylist() if r["device_id"] == "patient"]
    assert sorted(r["seq"] for r in stored if r["kind"] == "chunk") == list(range(len(frames)))


def test_client_raises_what_the_gateway_refused(make_gateway: Any) -> None:
    gateway = make_gateway()

    async def stream() -> None:
        client = DeviceClient(
            f"ws://127.0.0.1:{gateway.port}/v1/listen", device_id="d", token="wrong"
        )
        async with client:
            pass

    with pytest.raises(ClientError) as caught:
        asyncio.run(stream())
    assert caught.value.code == "unauthorized" and caught.value.close_code == 1008


def test_client_gives_up_when_nothing_listens() -> None:
    async def stream() -> None:
        client = DeviceClient(
            f"ws://127.0.0.1:{free_port()}/v1/listen", backoff=FAST, give_up_after_s=0.5
        )
        async with client:
            pass

    with pytest.raises(ClientError, match="giving up"):
        asyncio.run(stream())
