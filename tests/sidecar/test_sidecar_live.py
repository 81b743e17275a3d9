"""Live: a client streams to the real gateway, the real sidecar lands it, SQL sees it.

Every hop is real: a WebSocket to `sonolake gateway` (its own process, a free loopback port),
the fsync'd spool it writes, `sonolake sidecar` (its own process) landing sealed segments into
Delta, and `sonolake sql` reading the DuckDB catalog the lake keeps up to date.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from sidecar_signals import SyntheticSession, process_env
from support import REPO_ROOT, ServerProcess, free_port, python_module
from websockets.sync.client import connect

from lake_schemas import SESSIONS, Lake

pytestmark = pytest.mark.integration

SONOLAKE = str(REPO_ROOT / ".venv" / "bin" / "sonolake")


def _env(tmp_path: Path, cache: Path) -> dict[str, str]:
    return process_env(
        cache,
        state_dir=str(tmp_path / "state"),
        lake_uri=str(tmp_path / "lake"),
        gateway_serve_model="false",
        auth_tokens="",
        spool_retention_s="0",
    )


def _stream(port: int, session: SyntheticSession) -> tuple[str, int]:
    """One device session: Label, the audio in 100-ms frames, CloseStream.

    Returns the session id the gateway issued and the number of frames sent.
    """
    audio = session.audio()
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    frames = [pcm[i : i + 1600].tobytes() for i in range(0, pcm.size, 1600)]
    url = (
        f"ws://127.0.0.1:{port}/v1/listen?device_id={session.device_id}"
        "&encoding=linear16&sample_rate=16000"
    )
    with connect(url, open_timeout=10, compression=None) as ws:
        metadata = json.loads(ws.recv(timeout=10))
        assert metadata["type"] == "Metadata"
        ws.send(json.dumps({"type": "Label", "label": session.label}))
        for frame in frames:
            ws.send(frame)
        ws.send(json.dumps({"type": "CloseStream"}))
        try:
            while True:
                ws.recv(timeout=10)
        except Exception:  # closed normally after the final Metadata
            pass
    return metadata["session_id"], len(frames)


def _sql(tmp_path: Path, cache: Path, query: str) -> list[dict]:
    out = subprocess.run(
        [SONOLAKE, "sql", query, "--format", "json"],
        env=_env(tmp_path, cache),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_gateway_to_spool_to_sidecar_to_sql(tmp_path: Path, bytecode_cache: Path) -> None:
    port = free_port()
    gateway = ServerProcess(
        python_module("sonolake", "gateway", "--port", str(port)),
        port,
        env=_env(tmp_path, bytecode_cache),
        cwd=tmp_path,
        log_path=tmp_path / "gateway.log",
    )
    sidecar = subprocess.Popen(
        [SONOLAKE, "sidecar", "--interval", "0.2"],
        env=_env(tmp_path, bytecode_cache),
        cwd=tmp_path,
        stdout=open(tmp_path / "sidecar.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    try:
        with gateway:
            sessions = [
                SyntheticSession("live-a", "spk-a", chunks=28, bursts=2, label="yes"),
                SyntheticSession("live-b", "spk-b", chunks=16, bursts=1, label="no"),
            ]
            streamed = {s.session_id: _stream(port, s) for s in sessions}
            # the gateway issues session ids (time-ordered): map them back to the fixtures
            ids = {issued: name for name, (issued, _) in streamed.items()}
            frames = {issued: count for issued, count in streamed.values()}
            lake = Lake(tmp_path / "lake")
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # wait for the sessions' last batch to land
                if lake.exists(SESSIONS) and lake.read(SESSIONS).num_rows == len(sessions):
                    break
                time.sleep(0.3)
            query = "select count(*) as n from bronze.audio_chunks"
            count = _sql(tmp_path, bytecode_cache, query)[0]["n"]
            assert count == sum(frames.values()), (tmp_path / "sidecar.log").read_text()[-2000:]
            # The session rows land in the same batch as the last chunks (session_end).
            rows = _sql(
                tmp_path,
                bytecode_cache,
                "select session_id, chunks, events from silver.sessions order by session_id",
            )
            assert [(r["session_id"], r["chunks"]) for r in rows] == sorted(frames.items())
            events = _sql(
                tmp_path,
                bytecode_cache,
                "select session_id, label, count(*) as n from silver.audio_events "
                "group by all order by session_id",
            )
            assert [(ids[e["session_id"]], e["label"], e["n"]) for e in events] == [
                ("live-a", "yes", 2),
                ("live-b", "no", 1),
            ]
            assert [r["events"] for r in rows] == [2, 1]
    finally:
        if sidecar.poll() is None:
            os.kill(sidecar.pid, signal.SIGTERM)
        code = sidecar.wait(timeout=60)
    assert code == 0, "the sidecar stops gracefully on SIGTERM"
