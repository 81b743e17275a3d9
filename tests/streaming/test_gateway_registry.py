"""The host's session registry: a session opened by one gateway resumed by another.

Two real gateways (each its own event loop, spool writer and port) share one registry file, as
the workers of ``sonolake gateway --workers N`` do; real WebSocket clients open a session on
one and resume it on the other. Fast enough for every run; the process-level cases (kill -9,
``--workers 2``) are in ``tests/chaos/test_gateway_workers.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import next_message, open_ws, read_until_closed, speech_stream
from websockets.exceptions import ConnectionClosed

from streaming.gateway.decode import encode_stream
from streaming.gateway.protocol import CLOSE_GOING_AWAY, CLOSE_POLICY
from streaming.gateway.registry import Durable, SessionRegistry, SessionRow
from streaming.spool import KIND_CHUNK, KIND_SESSION_END

pytestmark = pytest.mark.integration


def _chunk(i: int) -> bytes:
    rng = np.random.default_rng(i)
    return rng.integers(-2000, 2000, 1600, dtype=np.int16).astype("<i2").tobytes()


def _pair(make_gateway: Any, tmp_path: Path, **overrides: Any) -> tuple[Any, Any]:
    shared = str(tmp_path / "sessions.db")
    return (
        make_gateway(registry_path=shared, heartbeat_s=0.2, **overrides),
        make_gateway(registry_path=shared, heartbeat_s=0.2, **overrides),
    )


def _open_and_leave(gateway: Any, seqs: range) -> dict[str, Any]:
    """Open a session, send chunks, wait for their Ack, drop the connection (no CloseStream)."""
    with open_ws(gateway.url("device_id=d")) as ws:
        first = next_message(ws)
        for i in seqs:
            ws.send(_chunk(i))
        acked = -1
        while acked < seqs[-1]:
            message = next_message(ws, skip_acks=False)
            acked = message["seq"] if message["type"] == "Ack" else acked
    return first


def _resume_query(first: dict[str, Any], resume_from: int, **changes: str) -> str:
    query = {
        "device_id": "d",
        "session_id": first["session_id"],
        "resume_token": first["resume_token"],
        "resume_from": str(resume_from),
        **changes,
    }
    return "&".join(f"{k}={v}" for k, v in query.items())


def _records(gateway: Any, kind: str) -> list[tuple[str, int]]:
    table = gateway.stored()
    if table.num_rows == 0:
        return []
    columns = (table[name].to_pylist() for name in ("kind", "session_id", "seq"))
    rows = zip(*columns, strict=True)
    return [(sid, seq) for k, sid, seq in rows if k == kind]


def test_a_session_opened_on_one_gateway_resumes_on_another(
    make_gateway: Any, tmp_path: Path
) -> None:
    a, b = _pair(make_gateway, tmp_path)
    first = _open_and_leave(a, range(5))
    with open_ws(b.url(_resume_query(first, 5))) as ws:
        metadata = next_message(ws)
        assert metadata["session_id"] == first["session_id"] and metadata["resumed"] is True
        assert metadata["next_seq"] == 5 and "resume_token" not in metadata
        for i in range(5, 10):
            ws.send(_chunk(i))
        ws.send(json.dumps({"type": "CloseStream"}))
        transcript = read_until_closed(ws)
    assert transcript.max_ack == 9
    assert transcript.of("Metadata")[-1]["closed_reason"] == "close_stream"
    sid = first["session_id"]
    assert _records(a, KIND_CHUNK) == [(sid, s) for s in range(5)]
    assert _records(b, KIND_CHUNK) == [(sid, s) for s in range(5, 10)]
    # only the gateway serving the session ends it, even once the first one's window is over
    assert [s for s, _ in _records(b, KIND_SESSION_END)] == [sid]
    a.call(a.gateway._finish(a.gateway.streams[sid], reason="disconnected", close_code=None))
    assert _records(a, KIND_SESSION_END) == []


def test_a_resume_on_another_gateway_needs_the_same_credential_and_secret(
    make_gateway: Any, tmp_path: Path
) -> None:
    a, b = _pair(make_gateway, tmp_path, auth_tokens=("test-token", "other-token"))
    first = _open_and_leave(a, range(3))
    refusals = []
    for url in (
        b.url(_resume_query(first, 3), token="other-token"),
        b.url(_resume_query(first, 3, resume_token="x" * 32)),
        b.url(_resume_query(first, 3, device_id="someone-else")),
        b.url(_resume_query({**first, "session_id": "0" * 32}, 3)),
    ):
        with open_ws(url) as ws:
            refusals.append(next_message(ws))
            assert read_until_closed(ws).close_code == CLOSE_POLICY
    assert {r["code"] for r in refusals} == {"resume_refused"}
    assert len({r["message"] for r in refusals}) == 1, "one answer reveals nothing"
    with open_ws(b.url(_resume_query(first, 3))) as ws:  # the owner's resume still works
        assert next_message(ws)["session_id"] == first["session_id"]


def test_the_old_connection_is_closed_when_another_gateway_takes_the_session(
    make_gateway: Any, tmp_path: Path
) -> None:
    a, b = _pair(make_gateway, tmp_path)
    with open_ws(a.url("device_id=d")) as old:
        first = next_message(old)
        old.send(_chunk(0))
        with open_ws(b.url(_resume_query(first, 1))) as new:
            assert next_message(new)["resumed"] is True
            deadline = time.monotonic() + 5
            with pytest.raises(ConnectionClosed) as closed:
                while time.monotonic() < deadline:
                    old.recv(timeout=0.5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_GOING_AWAY
            while a.gateway.metrics.sessions_moved == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first["session_id"] not in a.gateway.streams
            assert a.gateway.metrics.sessions_moved == 1
            assert b.gateway.metrics.sessions_taken_over == 1


def test_resumable_sessions_expire_for_every_gateway(make_gateway: Any, tmp_path: Path) -> None:
    a, b = _pair(make_gateway, tmp_path, resume_window_s=0.3)
    first = _open_and_leave(a, range(2))
    time.sleep(1.5)
    with open_ws(b.url(_resume_query(first, 2))) as ws:
        assert next_message(ws)["code"] == "resume_refused"


def test_quotas_count_the_sessions_of_every_gateway(make_gateway: Any, tmp_path: Path) -> None:
    a, b = _pair(make_gateway, tmp_path, max_sessions_per_credential=2)
    _open_and_leave(a, range(1))
    _open_and_leave(a, range(1))
    with open_ws(b.url("device_id=d")) as ws:
        refused = next_message(ws)
    assert refused["code"] == "quota_exceeded"


def test_registry_rows_move_between_owners_and_marks_never_go_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = SessionRegistry(tmp_path / "sessions.db", "w0")
        second = SessionRegistry(tmp_path / "sessions.db", "w1")
        await first.open()
        await second.open()
        now = time.time()
        row = SessionRow(
            "s1", "cred", "secret-digest", "dev", "linear16", 16000, now, now, -1, 0, 0, "w0", 0
        )
        await first.register(row)
        await asyncio.gather(
            *(first.note_durable("s1", Durable(seq, 1, 2, now)) for seq in (4, 9, 7))
        )
        found = await second.find("s1", live_since=now - 1)
        assert found is not None and found.durable_seq == 9 and found.utterances == 1
        claimed = await second.claim(found, now)
        assert claimed is not None and claimed.owner == "w1" and claimed.epoch == 1
        assert await second.claim(found, now) is None, "a stale read cannot claim twice"
        assert not await first.owns("s1", 0)
        assert await first.heartbeat([("s1", 0)], now) == {"s1"}
        await first.note_durable("s1", Durable(20, 5, 5, now))  # not the owner: no effect
        assert (await second.find("s1", live_since=0)).durable_seq == 9  # type: ignore[union-attr]
        assert not await first.end("s1", 0) and await second.end("s1", 1)
        assert await second.find("s1", live_since=0) is None
        await first.register(dataclasses.replace(row, session_id="s2"))
        assert await first.expire(live_since=now + 1, now=now + 2) == 1
        assert await first.live(live_since=0, credential="cred") == (0, 0)
        await first.close()
        await second.close()

    asyncio.run(scenario())


def test_a_compressed_session_resumes_on_another_gateway_from_its_saved_header(
    make_gateway: Any, tmp_path: Path, shared_data: Path
) -> None:
    """Ogg Opus opened on one gateway, resumed on another: the header saved beside the
    registry primes the second one's decoder; every frame is stored with its bytes once
    (the one frame sent again after the resume is the same bytes, which the sidecar lands
    once)."""
    a, b = _pair(make_gateway, tmp_path)
    data = encode_stream(speech_stream(shared_data, words=2, gap_s=0.8), 16_000, "ogg", "libopus")
    frames = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    cut = len(frames) // 2
    with open_ws(a.url("device_id=d&encoding=opus")) as ws:
        first = next_message(ws)
        for frame in frames[:cut]:
            ws.send(frame)
        acked = -1
        while acked < cut - 1:
            message = next_message(ws, skip_acks=False)
            acked = message["seq"] if message["type"] == "Ack" else acked
    with open_ws(b.url(_resume_query(first, cut - 1, encoding="opus"))) as ws:
        assert next_message(ws)["resumed"] is True
        for frame in frames[cut - 1 :]:
            ws.send(frame)
        ws.send(json.dumps({"type": "CloseStream"}))
        transcript = read_until_closed(ws, timeout_s=20)
    assert [w["code"] for w in transcript.of("Warning")].count("decoder_restarted") == 1
    assert transcript.of("Metadata")[-1]["closed_reason"] == "close_stream"
    stored = {}
    for gateway in (a, b):
        for row in gateway.stored().to_pylist():
            if row["kind"] == KIND_CHUNK and row["received"]:
                assert stored.setdefault(row["seq"], row["received"]) == row["received"]
    assert [stored[s] for s in sorted(stored)] == frames, "every frame's bytes, once"
    resumed_pcm = b"".join(r["pcm"] for r in b.stored().to_pylist() if r["kind"] == KIND_CHUNK)
    assert len(resumed_pcm) > 16_000, "the second gateway decoded the rest of the stream"
