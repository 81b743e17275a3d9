"""Sessions over real connections: results, acks, the spool, resume, limits, backpressure."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import (
    GatewayThread,
    chunks,
    next_message,
    open_ws,
    read_until_closed,
    speech_stream,
)

from features.corpus import read_manifest, read_wav
from features.pcm import encode_mulaw
from streaming.gateway.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_OVERLOADED,
    CLOSE_POLICY,
)
from streaming.spool import KIND_CHUNK, KIND_SESSION_END

pytestmark = pytest.mark.integration


def _stream(ws: Any, frames: list[bytes], pause_s: float = 0.0) -> None:
    for frame in frames:
        ws.send(frame)
        if pause_s:
            time.sleep(pause_s)


def _close(ws: Any) -> Any:
    ws.send(json.dumps({"type": "CloseStream"}))
    return read_until_closed(ws, timeout_s=20)


def _records(gateway: GatewayThread, session_id: str) -> list[dict[str, Any]]:
    table = gateway.stored()
    return [r for r in table.to_pylist() if r["session_id"] == session_id]


def test_a_session_end_to_end(make_gateway: Any, shared_data: Path) -> None:
    gateway = make_gateway()
    audio = speech_stream(shared_data, words=2)
    frames = chunks(audio)
    with open_ws(gateway.url("device_id=kitchen-1&interim_results=true")) as ws:
        metadata = next_message(ws)
        assert metadata["type"] == "Metadata" and metadata["model_loaded"] is False
        assert metadata["model_version"] is None and "no model" in metadata["note"]
        ws.send(json.dumps({"type": "Label", "label": "yes"}))
        _stream(ws, frames, pause_s=0.01)
        transcript = _close(ws)
    assert transcript.close_code == CLOSE_NORMAL
    kinds = [m["type"] for m in transcript.messages]
    assert kinds.count("SpeechStarted") == 2 and kinds.count("UtteranceEnd") == 2
    finals = [m for m in transcript.of("Results") if m["is_final"]]
    assert len(finals) == 2 and not [m for m in transcript.of("Results") if not m["is_final"]]
    for result in finals:
        assert result["label"] is None and result["score"] is None
        assert result["alternatives"] == [] and result["speech_final"] is True
        assert 0.2 < result["duration"] < 1.2
        assert 0 <= result["last_seq"] < len(frames)
    assert finals[0]["start"] < finals[1]["start"]
    assert transcript.max_ack == len(frames) - 1
    last_ack = max(i for i, m in enumerate(transcript.messages) if m["type"] == "Ack")
    assert transcript.messages[last_ack]["seq"] == len(frames) - 1
    assert transcript.messages[-1]["type"] == "Metadata", "the last Ack precedes the closing one"
    closing = transcript.of("Metadata")[-1]
    assert closing["final"] and closing["closed_reason"] == "close_stream"
    assert closing["totals"]["chunks"] == len(frames)
    assert closing["totals"]["final_results"] == 2 and closing["totals"]["dropped_chunks"] == 0

    records = _records(gateway, metadata["session_id"])
    stored = [r for r in records if r["kind"] == KIND_CHUNK]
    assert [r["seq"] for r in stored] == list(range(len(frames)))
    assert b"".join(r["pcm"] for r in stored) == audio.tobytes(), "stored exactly as sent"
    assert {r["label"] for r in stored} == {"yes"}
    assert all(r["device_id"] == "kitchen-1" and r["sample_rate"] == 16000 for r in stored)
    times = [r["event_time"] for r in stored]
    assert all(b > a for a, b in itertools.pairwise(times))
    (end,) = [r for r in records if r["kind"] == KIND_SESSION_END]
    totals = json.loads(end["meta_json"])
    assert totals["chunks"] == len(frames) and totals["closed_reason"] == "close_stream"


def test_finalize_forces_a_final_result(make_gateway: Any, shared_data: Path) -> None:
    gateway = make_gateway()
    audio = speech_stream(shared_data, words=1, gap_s=0.5)
    # endpointing off: the trailing silence does not end the utterance, the Finalize does
    with open_ws(gateway.url("device_id=d&endpointing=false")) as ws:
        next_message(ws)
        _stream(ws, chunks(audio))
        ws.send(json.dumps({"type": "Finalize"}))
        deadline = time.monotonic() + 10
        message = next_message(ws)
        while message["type"] != "Results" and time.monotonic() < deadline:
            message = next_message(ws)
        assert message["is_final"] and message["from_finalize"] and not message["speech_final"]
        assert next_message(ws)["type"] == "UtteranceEnd"
        transcript = _close(ws)
    assert transcript.close_code == CLOSE_NORMAL
    assert not transcript.of("Results"), "nothing left open after the Finalize"


def test_resume_continues_the_session_and_stores_duplicates_once(make_gateway: Any) -> None:
    gateway = make_gateway()
    tone = (3000 * np.sin(np.arange(16000 * 2) * 0.05)).astype(np.int16)
    frames = chunks(tone)  # 20 chunks
    with open_ws(gateway.url("device_id=d")) as ws:
        first = next_message(ws)
        assert first["next_seq"] == 0 and first["resumed"] is False
        session_id, secret = first["session_id"], first["resume_token"]
        _stream(ws, frames[:12])
        deadline = time.monotonic() + 10
        acked = -1
        while acked < 11 and time.monotonic() < deadline:
            message = next_message(ws, skip_acks=False)
            acked = message["seq"] if message["type"] == "Ack" else acked
    # the connection dropped without CloseStream; the device saw Ack 11 but resends from 8
    resume = f"device_id=d&session_id={session_id}&resume_token={secret}"
    with open_ws(gateway.url(f"{resume}&resume_from=8")) as ws:
        metadata = next_message(ws)
        assert metadata["resumed"] is True and metadata["next_seq"] == 8
        assert metadata["durable_seq"] == 11 and "resume_token" not in metadata
        _stream(ws, frames[8:])
        transcript = _close(ws)
    assert transcript.max_ack == 19
    totals = transcript.of("Metadata")[-1]["totals"]
    assert totals["duplicate_chunks"] == 4 and totals["chunks"] == 20
    assert totals["connections"] == 2
    stored = [r for r in _records(gateway, session_id) if r["kind"] == KIND_CHUNK]
    assert [r["seq"] for r in stored] == list(range(20))
    assert b"".join(r["pcm"] for r in stored) == tone.tobytes()
    # an ended session cannot be resumed, and is refused like any unknown one
    with open_ws(gateway.url(f"{resume}&resume_from=20")) as ws:
        refused = read_until_closed(ws)
    assert refused.messages[0]["code"] == "resume_refused"
    assert refused.close_code == CLOSE_POLICY


def test_idle_connection_is_closed(make_gateway: Any) -> None:
    gateway = make_gateway(idle_timeout_s=0.5)
    with open_ws(gateway.url("device_id=d")) as ws:
        next_message(ws)
        started = time.monotonic()
        transcript = read_until_closed(ws, timeout_s=5)
    assert time.monotonic() - started < 3
    assert transcript.messages[-1]["code"] == "idle_timeout"
    assert transcript.close_code == CLOSE_POLICY


def test_keepalive_keeps_a_silent_connection_open(make_gateway: Any) -> None:
    gateway = make_gateway(idle_timeout_s=0.5)
    with open_ws(gateway.url("device_id=d")) as ws:
        next_message(ws)
        for _ in range(6):
            time.sleep(0.2)
            ws.send(json.dumps({"type": "KeepAlive"}))
        transcript = _close(ws)
    assert transcript.close_code == CLOSE_NORMAL


def test_session_limit_answers_1013_and_counts_resumable_sessions(make_gateway: Any) -> None:
    gateway = make_gateway(max_sessions=2)
    first = open_ws(gateway.url("device_id=a"))
    assert next_message(first)["type"] == "Metadata"
    with open_ws(gateway.url("device_id=b")) as second:  # leaves without CloseStream
        assert next_message(second)["type"] == "Metadata"
    # b is disconnected but resumable: it still holds one of the two sessions
    with open_ws(gateway.url("device_id=c")) as third:
        refused = read_until_closed(third)
    assert refused.messages[0]["code"] == "overloaded"
    assert refused.close_code == CLOSE_OVERLOADED
    assert _close(first).close_code == CLOSE_NORMAL  # an ended session frees its place
    with open_ws(gateway.url("device_id=d")) as fourth:
        assert next_message(fourth)["type"] == "Metadata"


def test_without_tokens_only_loopback_is_accepted_and_only_if_allowed(make_gateway: Any) -> None:
    open_gateway = make_gateway(auth_tokens=())
    with open_ws(open_gateway.url("device_id=d", token=None)) as ws:
        assert next_message(ws)["type"] == "Metadata"
    closed_gateway = make_gateway(auth_tokens=(), allow_anonymous_loopback=False)
    with open_ws(closed_gateway.url("device_id=d", token=None)) as ws:
        refused = read_until_closed(ws)
    assert refused.messages[0]["code"] == "unauthorized" and refused.close_code == CLOSE_POLICY


def test_falling_behind_drops_oldest_audio_but_stores_every_chunk(make_gateway: Any) -> None:
    # The VAD loop runs once a second and a session may queue only 300 ms: a burst overflows.
    gateway = make_gateway(vad_tick_ms=1000, max_pending_ms=300)
    noise = np.random.default_rng(0).normal(0, 2000, 16000 * 3).astype(np.int16)
    frames = chunks(noise)
    with open_ws(gateway.url("device_id=d")) as ws:
        next_message(ws)
        ws.send(np.zeros(1600, np.int16).tobytes())  # the VAD loop wakes and goes to sleep
        time.sleep(0.1)
        _stream(ws, frames)
        transcript = _close(ws)
    warnings = transcript.of("Warning")
    assert warnings and warnings[0]["code"] == "backpressure"
    assert warnings[0]["dropped_chunks"] > 0
    totals = transcript.of("Metadata")[-1]["totals"]
    assert totals["dropped_chunks"] >= len(frames) - 4
    assert transcript.max_ack == len(frames), "every accepted chunk is durable"
    stored = [r for r in _records(gateway, transcript.of("Metadata")[-1]["session_id"])]
    assert len([r for r in stored if r["kind"] == KIND_CHUNK]) == len(frames) + 1
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/metrics").read().decode()
    dropped = [line for line in metrics.splitlines() if line.startswith("sonolake_gateway_dropped")]
    assert float(dropped[0].split()[-1]) == totals["dropped_chunks"]


def test_mulaw_at_8k_is_resampled_and_heard(make_gateway: Any, shared_data: Path) -> None:
    gateway = make_gateway()
    clip = read_manifest(shared_data / "fsdd" / "manifest.csv")[0]
    samples, rate = read_wav(clip.path)
    assert rate == 8000
    silence = np.zeros(rate // 2, np.int16)
    audio = np.concatenate([silence, samples, silence, silence])
    frames = [encode_mulaw(audio[i : i + 800]) for i in range(0, audio.size, 800)]
    with open_ws(gateway.url("device_id=phone-1&encoding=mulaw&sample_rate=8000")) as ws:
        assert next_message(ws)["sample_rate"] == 8000
        _stream(ws, frames)
        transcript = _close(ws)
    assert len(transcript.of("SpeechStarted")) == 1
    final = next(r for r in transcript.of("Results") if r["is_final"])
    assert 0.4 < final["start"] < 0.6, "times are on the 16 kHz stream clock, in seconds"
    stored = [r for r in gateway.stored().to_pylist() if r["kind"] == KIND_CHUNK]
    assert {(r["encoding"], r["sample_rate"]) for r in stored} == {("mulaw", 8000)}
    assert b"".join(r["pcm"] for r in stored) == b"".join(frames)


def test_stop_flushes_and_closes_open_sessions(make_gateway: Any) -> None:
    gateway = make_gateway()
    with open_ws(gateway.url("device_id=d")) as ws:
        next_message(ws)
        _stream(ws, chunks(np.zeros(8000, np.int16)))
        time.sleep(0.2)
        gateway.stop()
        transcript = read_until_closed(ws)
    assert transcript.close_code == CLOSE_GOING_AWAY
    closing = transcript.of("Metadata")[-1]
    assert closing["closed_reason"] == "shutdown" and transcript.max_ack == 4
    from streaming.spool import read_segment, sealed_segments

    rows = [r for s in sealed_segments(gateway.spool_dir) for r in read_segment(s.path).to_pylist()]
    assert [r["kind"] for r in rows] == [KIND_CHUNK] * 5 + [KIND_SESSION_END]
    assert json.loads(rows[-1]["meta_json"])["closed_reason"] == "shutdown"


def test_http_routes(make_gateway: Any) -> None:
    gateway = make_gateway()
    base = f"http://127.0.0.1:{gateway.port}"
    health = json.loads(urllib.request.urlopen(f"{base}/healthz").read())
    assert health["status"] == "ok" and health["model_loaded"] is False
    metrics = urllib.request.urlopen(f"{base}/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain")
    text = metrics.read().decode()
    for name in (
        "sonolake_gateway_sessions_active",
        "sonolake_gateway_chunks_total",
        "sonolake_gateway_dropped_chunks_total",
        "sonolake_gateway_vad_batch_seconds_bucket",
        "sonolake_gateway_inference_seconds_bucket",
        "sonolake_gateway_spool_lag_seconds_bucket",
    ):
        assert name in text
    page = urllib.request.urlopen(f"{base}/").read().decode()
    assert "<title>Sonolake live</title>" in page and "/app.js" in page
    assert "registerProcessor" in urllib.request.urlopen(f"{base}/pcm-worklet.js").read().decode()
    for path in ("/nope", "/../streaming/gateway.py", "/web/app.js", "/%2e%2e/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}{path}")
        assert caught.value.code == 404, path
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{base}/v1/listen?device_id=d")
    assert caught.value.code == 426, "a plain GET of the WebSocket route asks for an upgrade"
