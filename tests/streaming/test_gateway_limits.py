"""Bounded resources over real connections: quotas, freed buffers, the rate limit, idling."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
from gateway_support import (
    GatewayThread,
    bare_stream,
    chunks,
    next_message,
    open_ws,
    read_until_closed,
)

from streaming.gateway.protocol import CLOSE_NORMAL, CLOSE_POLICY
from streaming.spool import KIND_CHUNK

pytestmark = pytest.mark.integration


def _metric(gateway: GatewayThread, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/metrics").read().decode()
    (line,) = [line for line in text.splitlines() if line.startswith(f"sonolake_gateway_{name} ")]
    return float(line.split()[-1])


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the gateway did not get there"
        time.sleep(0.05)


def test_sessions_per_credential_are_capped_with_1008(make_gateway: Any) -> None:
    gateway = make_gateway(auth_tokens=("fleet", "other"), max_sessions_per_credential=2)
    with (
        open_ws(gateway.url("device_id=a", token="fleet")) as a,
        open_ws(gateway.url("device_id=b", token="fleet")) as b,
    ):
        assert next_message(a)["type"] == next_message(b)["type"] == "Metadata"
        with open_ws(gateway.url("device_id=c", token="fleet")) as c:
            refused = read_until_closed(c)
        assert refused.messages[0]["code"] == "quota_exceeded"
        assert refused.close_code == CLOSE_POLICY
        with open_ws(gateway.url("device_id=c", token="other")) as c:
            assert next_message(c)["type"] == "Metadata", "other credentials are not affected"


def test_a_disconnected_session_keeps_only_what_a_resume_needs(make_gateway: Any) -> None:
    gateway = make_gateway()
    noise = np.random.default_rng(1).normal(0, 3000, 16000).astype(np.int16)
    sockets = [open_ws(gateway.url(f"device_id=d{i}")) for i in range(10)]
    for ws in sockets:
        next_message(ws)
        for frame in chunks(noise):
            ws.send(frame)
    _wait_for(lambda: _metric(gateway, "chunks_total") == 100)
    connected = _metric(gateway, "buffered_bytes")
    assert connected > 10 * 300_000, "each live session holds its processing buffer"
    for ws in sockets:
        ws.close()  # no CloseStream: the sessions stay resumable
    _wait_for(lambda: _metric(gateway, "sessions_resumable") == 10)
    _wait_for(lambda: _metric(gateway, "buffered_bytes") <= 10 * 2048 * 4)
    assert _metric(gateway, "sessions") == 10


def test_the_rate_limit_allows_catch_up_but_slows_a_flood(make_gateway: Any) -> None:
    rate, burst, tiny_s = 0.3, 2.5, 0.02  # audio-s per s, audio-s, charge of a 2-byte frame
    gateway = make_gateway(rate_audio_s_per_s=rate, rate_burst_audio_s=burst)
    tone = (2000 * np.sin(np.arange(16000 * 2) * 0.05)).astype(np.int16)
    with open_ws(gateway.url("device_id=d")) as ws:
        next_message(ws)
        started = time.monotonic()
        for frame in chunks(tone):  # 2 s at once: within the burst (catch-up)
            ws.send(frame)
        _wait_for(lambda: _metric(gateway, "chunks_total") == 20)
        assert _metric(gateway, "rate_limited_frames_total") == 0
        for _ in range(100):  # tiny frames, charged 20 ms each: 25 fit in what is left
            ws.send(b"\x00\x00")
        ws.send(json.dumps({"type": "CloseStream"}))
        # Whatever the machine's speed, the bucket cannot have refilled more than this.
        allowance_s = burst + rate * (time.monotonic() - started)
        transcript = read_until_closed(ws, timeout_s=30)
    must_wait = int((2.0 + 100 * tiny_s - allowance_s) / tiny_s) - 1
    assert must_wait >= 20, "the flood must outrun the bucket for this test to mean anything"
    assert transcript.close_code == CLOSE_NORMAL and transcript.max_ack == 119
    assert _metric(gateway, "rate_limited_frames_total") >= must_wait
    stored = [r for r in gateway.stored().to_pylist() if r["kind"] == KIND_CHUNK]
    assert len(stored) == 120, "slowed down, never dropped"


def test_only_audio_or_keepalive_keeps_a_connection_alive(make_gateway: Any) -> None:
    gateway = make_gateway(idle_timeout_s=0.5)
    with open_ws(gateway.url("device_id=d")) as ws:
        next_message(ws)
        started = time.monotonic()
        transcript = None
        while time.monotonic() - started < 5:
            try:
                ws.send("{not json")
                ws.send('{"type":"Label","label":"yes"}')
            except Exception:
                break
            time.sleep(0.1)
        transcript = read_until_closed(ws, timeout_s=5)
    assert transcript.of("Error")[-1]["code"] == "idle_timeout"
    assert transcript.close_code == CLOSE_POLICY


def test_the_spool_queue_is_bounded_in_bytes_not_chunks() -> None:
    from datetime import UTC, datetime

    from streaming.spool import SpoolRecord

    stream = bare_stream(1024 * 1024)
    now = datetime.now(UTC)

    def record(seq: int, size: int) -> SpoolRecord:
        return SpoolRecord.chunk(
            session_id="s",
            device_id="d",
            seq=seq,
            event_time=now,
            sample_rate=16000,
            encoding="linear16",
            pcm=b"\0" * size,
            received_at=now,
        )

    for seq in range(1000):  # many small chunks: far more than the old 256-chunk bound
        stream.queue_for_spool(record(seq, 2), 0.0)
    assert stream.spool_room.is_set()
    for seq in range(1000, 1008):  # eight 128 KiB frames reach 1 MiB
        stream.queue_for_spool(record(seq, 128 * 1024), 0.0)
    assert not stream.spool_room.is_set() and stream.spool_pending_bytes >= 1024 * 1024
