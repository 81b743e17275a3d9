"""``sonolake gateway`` as a real process: graceful SIGTERM, and kill -9 losing no acked chunk."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from gateway_support import chunks, next_message, open_ws, read_until_closed
from support import ServerProcess, free_port, python_module
from websockets.exceptions import ConnectionClosed

from streaming.gateway.protocol import CLOSE_GOING_AWAY
from streaming.spool import (
    KIND_CHUNK,
    read_segment,
    recover_open_segments,
    sealed_segments,
    spool_folders,
)

pytestmark = pytest.mark.integration


def _gateway(tmp_path: Path) -> ServerProcess:
    port = free_port()
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


def _rows(spool_dir: Path) -> list[dict]:
    return [r for s in sealed_segments(spool_dir) for r in read_segment(s.path).to_pylist()]


def test_sigterm_closes_sessions_and_seals_the_spool(tmp_path: Path) -> None:
    server = _gateway(tmp_path).start()
    frames = chunks((2000 * np.sin(np.arange(16000) * 0.03)).astype(np.int16))
    try:
        with open_ws(f"ws://127.0.0.1:{server.port}/v1/listen?device_id=d") as ws:
            assert next_message(ws)["type"] == "Metadata"
            for frame in frames:
                ws.send(frame)
            time.sleep(0.3)
            os.kill(server.pid, signal.SIGTERM)
            transcript = read_until_closed(ws)
        assert server.proc is not None
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
    assert transcript.close_code == CLOSE_GOING_AWAY
    assert transcript.of("Metadata")[-1]["closed_reason"] == "shutdown"
    spool_dir = tmp_path / "state" / "spool"
    assert not list(spool_dir.rglob("*.open")), "every worker's open segment was sealed"
    rows = _rows(spool_dir)
    assert [r["seq"] for r in rows if r["kind"] == KIND_CHUNK] == list(range(len(frames)))
    assert json.loads(rows[-1]["meta_json"])["closed_reason"] == "shutdown"


def test_kill_9_loses_no_acknowledged_chunk(tmp_path: Path) -> None:
    server = _gateway(tmp_path).start()
    noise = np.random.default_rng(0).normal(0, 1000, 16000 * 6).astype(np.int16)
    frames = chunks(noise)
    acked = -1
    try:
        with open_ws(f"ws://127.0.0.1:{server.port}/v1/listen?device_id=d") as ws:
            next_message(ws)
            for frame in frames[:40]:
                ws.send(frame)
            deadline = time.monotonic() + 10
            while acked < 39 and time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=10))
                if message["type"] == "Ack":
                    acked = max(acked, message["seq"])
            for frame in frames[40:]:  # kill -9 while these are being written
                ws.send(frame)
            os.kill(server.pid, signal.SIGKILL)
            try:
                while True:
                    message = json.loads(ws.recv(timeout=5))
                    if message["type"] == "Ack":
                        acked = max(acked, message["seq"])
            except (ConnectionClosed, TimeoutError):
                pass
    finally:
        server.stop()
    assert acked >= 39, "the gateway acknowledged chunks before it died"
    spool_dir = tmp_path / "state" / "spool"
    for _, folder in spool_folders(spool_dir):  # what each worker's next writer does on start
        recover_open_segments(folder)
    stored = [r for r in _rows(spool_dir) if r["kind"] == KIND_CHUNK]
    seqs = [r["seq"] for r in stored]
    assert len(seqs) == len(set(seqs))
    assert set(range(acked + 1)) <= set(seqs), "every acknowledged chunk survived kill -9"
    by_seq = {r["seq"]: r["pcm"] for r in stored}
    assert all(by_seq[s] == frames[s] for s in range(acked + 1))
