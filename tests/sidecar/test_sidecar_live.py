"""Live: a client streams real recordings to the real gateway, the real sidecar lands it, SQL
sees it — and what the lake says about speech is what the client was told.

Every hop is real: a WebSocket to `sonolake gateway` (its own process, a free loopback port),
the fsync'd spool it writes (audio and the gateway's decisions), `sonolake sidecar` (its own
process) landing sealed segments into Delta, and `sonolake sql` reading the DuckDB catalog.
Recordings are Speech Commands clips copied from ../shared/data at run time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sidecar_signals import process_env
from support import REPO_ROOT, ServerProcess, free_port, python_module
from websockets.sync.client import connect

from features.corpus import load_audio
from lake_schemas import AUDIO_EVENTS, PREDICTIONS, SESSIONS, Lake

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


DATA = REPO_ROOT.parent / "shared" / "data" / "speech_commands"
CLIPS = {"live-a": ("yes", "no", "up"), "live-b": ("down", "left")}
"""Per session, the words spoken (one real clip each, between half-second silences)."""


@dataclass(frozen=True)
class RecordedSession:
    session_id: str
    device_id: str
    label: str
    audio: np.ndarray


def _recorded_sessions(tmp_path: Path) -> list[RecordedSession]:
    if not DATA.is_dir():
        pytest.skip(f"real recordings not found at {DATA}")
    out = []
    silence = np.zeros(8000, dtype=np.float32)
    for session_id, words in CLIPS.items():
        parts = [silence]
        for word in words:
            source = sorted((DATA / word).glob("*.wav"))[0]
            copy = tmp_path / "clips" / f"{word}.wav"
            copy.parent.mkdir(exist_ok=True)
            shutil.copy(source, copy)
            parts += [load_audio(copy), silence]
        out.append(
            RecordedSession(session_id, f"dev-{session_id}", words[0], np.concatenate(parts))
        )
    return out


def _stream(port: int, session: RecordedSession, received: list[dict]) -> tuple[str, int]:
    """One device session: Label, the audio in 100-ms frames, CloseStream; returns the session
    id the gateway issued and the frames sent, and collects every message the client received."""
    pcm = np.clip(np.round(session.audio * 32767), -32768, 32767).astype("<i2")
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
                message = ws.recv(timeout=10)
                if isinstance(message, str):
                    received.append(json.loads(message))
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
            sessions = _recorded_sessions(tmp_path)
            by_name: dict[str, list[dict]] = {s.session_id: [] for s in sessions}
            streamed = {s.session_id: _stream(port, s, by_name[s.session_id]) for s in sessions}
            # the gateway issues session ids: key what each client saw by the issued id
            received = {streamed[name][0]: got for name, got in by_name.items()}
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
            _assert_lake_matches_what_clients_received(lake, received)
            finals = {
                sid: sum(m.get("is_final", False) for m in got if m["type"] == "Results")
                for sid, got in received.items()
            }
            assert [r["events"] for r in rows] == [finals[r["session_id"]] for r in rows]
    finally:
        if sidecar.poll() is None:
            os.kill(sidecar.pid, signal.SIGTERM)
        code = sidecar.wait(timeout=60)
    assert code == 0, "the sidecar stops gracefully on SIGTERM"


def _assert_lake_matches_what_clients_received(lake: Lake, received: dict[str, list[dict]]) -> None:
    """Every Results a client received is one gold.predictions row (same utterance, span,
    label); every final one maps to exactly one silver.audio_events row of that utterance."""
    predictions = lake.read(PREDICTIONS).to_pylist()
    events = {e["event_id"]: e for e in lake.read(AUDIO_EVENTS).to_pylist()}
    by_result = {}
    for row in predictions:
        key = (
            row["session_id"],
            row["utterance"],
            row["is_final"],
            row["start_s"],
            row["duration_s"],
        )
        by_result.setdefault(key, []).append(row)
    finals = 0
    for session_id, messages in received.items():
        results = [m for m in messages if m["type"] == "Results"]
        assert any(m["is_final"] for m in results), f"{session_id}: no utterance was heard"
        for message in results:
            key = (
                session_id,
                message["utterance"],
                message["is_final"],
                message["start"],
                message["duration"],
            )
            rows = by_result.get(key, [])
            assert len(rows) == 1, (key, rows)
            (row,) = rows
            assert (row["predicted_label"], row["model_version"]) == (
                message["label"],
                message["model_version"],
            )
            if message["is_final"]:
                finals += 1
                event = events[row["event_id"]]  # the utterance the client was answered about
                assert event["session_id"] == session_id
                assert event["duration_s"] == pytest.approx(message["duration"], abs=1e-3)
                assert event["first_seq"] <= message["last_seq"] == event["last_seq"]
                assert -60 < event["rms_dbfs"] < 0
    assert finals == len(events), "every silver event is an utterance a client was answered about"
    assert len(predictions) == sum(
        m["type"] == "Results" for got in received.values() for m in got
    ), "gold.predictions holds exactly the results the clients received"
