"""Who may stream and resume, over real connections: ids, resume secrets, tokens, origins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import (
    TEST_CONFIG,
    GatewayThread,
    Transcript,
    chunks,
    next_message,
    open_ws,
    read_until_closed,
)

from streaming.gateway.protocol import CLOSE_BAD_DATA, CLOSE_NORMAL, CLOSE_POLICY
from streaming.spool import KIND_CHUNK

pytestmark = pytest.mark.integration

TONE = (3000 * np.sin(np.arange(16000) * 0.05)).astype(np.int16)


def _url(gateway: GatewayThread, query: str, token: str | None) -> str:
    return gateway.url(query, token=token)


def _refused(url: str, **kwargs: Any) -> Transcript:
    with open_ws(url, **kwargs) as ws:
        return read_until_closed(ws)


def _wait_ack(ws: Any, seq: int) -> None:
    acked = -1
    while acked < seq:
        message = next_message(ws, skip_acks=False)
        acked = message["seq"] if message["type"] == "Ack" else acked


def test_another_token_cannot_resume_a_session_and_every_refusal_is_the_same(
    make_gateway: Any,
) -> None:
    gateway = make_gateway(auth_tokens=("token-a", "token-b"))
    frames = chunks(TONE)
    with open_ws(_url(gateway, "device_id=d", "token-a")) as victim:
        meta = next_message(victim)
        sid, secret = meta["session_id"], meta["resume_token"]
        assert len(sid) == 32 and len(secret) >= 32
        victim.send(frames[0])
        _wait_ack(victim, 0)
        attempts = {
            "other token, right secret": _url(
                gateway, f"device_id=d&session_id={sid}&resume_token={secret}", "token-b"
            ),
            "same token, wrong secret": _url(
                gateway, f"device_id=d&session_id={sid}&resume_token=guess", "token-a"
            ),
            "other device": _url(
                gateway, f"device_id=e&session_id={sid}&resume_token={secret}", "token-a"
            ),
            "unknown session": _url(
                gateway, f"device_id=d&session_id={'0' * 32}&resume_token={secret}", "token-a"
            ),
        }
        refusals = {name: _refused(url) for name, url in attempts.items()}
        # the victim streams on, undisturbed, and its audio is its own
        victim.send(frames[1])
        victim.send(json.dumps({"type": "CloseStream"}))
        transcript = read_until_closed(victim)
    assert transcript.close_code == CLOSE_NORMAL and transcript.max_ack == 1
    answers = {(json.dumps(r.messages), r.close_code, r.close_reason) for r in refusals.values()}
    assert len(answers) == 1, "a guesser cannot tell which check failed, or that it exists"
    (refused, *_) = refusals.values()
    assert refused.messages[0]["code"] == "resume_refused"
    assert refused.close_code == CLOSE_POLICY
    stored = [r for r in gateway.stored().to_pylist() if r["kind"] == KIND_CHUNK]
    assert [(r["session_id"], r["seq"]) for r in stored] == [(sid, 0), (sid, 1)]


def test_the_same_credential_and_secret_resume(make_gateway: Any) -> None:
    gateway = make_gateway(auth_tokens=("token-a", "token-b"))
    frames = chunks(TONE)
    with open_ws(_url(gateway, "device_id=d", "token-b")) as ws:
        meta = next_message(ws)
        ws.send(frames[0])
        _wait_ack(ws, 0)
    resume = f"device_id=d&session_id={meta['session_id']}&resume_token={meta['resume_token']}"
    with open_ws(_url(gateway, f"{resume}&resume_from=1", "token-b")) as ws:
        again = next_message(ws)
        assert again["resumed"] and again["session_id"] == meta["session_id"]
        ws.send(frames[1])
        ws.send(json.dumps({"type": "CloseStream"}))
        assert read_until_closed(ws).max_ack == 1


def test_a_client_cannot_name_a_session(make_gateway: Any) -> None:
    gateway = make_gateway()
    refused = _refused(gateway.url("device_id=b&session_id=someone-elses"))
    assert refused.messages[0]["code"] == "bad_param" and refused.close_code == CLOSE_BAD_DATA
    assert "resume_token" in refused.messages[0]["message"]


def test_after_a_restart_a_device_gets_a_new_session_and_loses_nothing(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    frames = chunks(TONE)
    ids, acked = [], []
    for _restart in range(2):
        gateway = GatewayThread(TEST_CONFIG, spool_dir).start()
        try:
            with open_ws(gateway.url("device_id=d")) as ws:  # the device starts again at seq 0
                ids.append(next_message(ws)["session_id"])
                for frame in frames[:5]:
                    ws.send(frame)
                _wait_ack(ws, 4)
                acked.append(4)
        finally:
            gateway.stop()  # (a crash is the chaos suite's job; the key space is the point)
    assert ids[0] != ids[1] and sorted(ids) == ids, "new ids, ordered by creation time"
    from streaming.spool import read_segment, sealed_segments

    rows = [r for s in sealed_segments(spool_dir) for r in read_segment(s.path).to_pylist()]
    keys = [(r["session_id"], r["seq"]) for r in rows if r["kind"] == KIND_CHUNK]
    assert len(keys) == 10 == len(set(keys)), "every acknowledged chunk has its own lake key"


@pytest.mark.parametrize(
    ("headers", "query_token", "admitted"),
    [
        ({}, None, True),  # a non-browser client on loopback
        ({"Origin": "http://127.0.0.1:{port}"}, None, True),  # the gateway's own page
        ({"Origin": "http://localhost:{port}"}, None, True),
        ({"Origin": "http://app.example:3000"}, None, True),  # allowed by the operator
        ({"Origin": "https://evil.example"}, None, False),  # any other web page
        ({"Origin": "http://127.0.0.1:{port}.evil.example"}, None, False),
        ({"Origin": "null"}, None, False),
        ({"X-Forwarded-For": "203.0.113.9"}, None, False),  # a reverse proxy on this host
        ({"Forwarded": "for=203.0.113.9"}, None, False),
        ({"X-Real-IP": "203.0.113.9"}, None, False),
        ({}, "not-a-token", False),  # a presented token must be valid, in every mode
        ({"Authorization": "Token nope"}, None, False),
    ],
)
def test_anonymous_loopback_admission(
    make_gateway: Any, headers: dict[str, str], query_token: str | None, admitted: bool
) -> None:
    gateway = make_gateway(auth_tokens=(), allowed_origins=("http://app.example:3000",))
    sent = {k: v.format(port=gateway.port) for k, v in headers.items()}
    with open_ws(gateway.url("device_id=d", token=query_token), additional_headers=sent) as ws:
        first = next_message(ws)
        if admitted:
            assert first["type"] == "Metadata"
            return
        transcript = read_until_closed(ws)
    assert (first["type"], first["code"]) == ("Error", "unauthorized")
    assert transcript.close_code == CLOSE_POLICY


def test_deepgram_style_credentials(make_gateway: Any) -> None:
    gateway = make_gateway(auth_tokens=("first", "second"))
    url = gateway.url("device_id=d", token=None)
    with open_ws(url, subprotocols=["token", "second"]) as ws:  # browsers' only way
        assert ws.subprotocol == "token"
        assert next_message(ws)["type"] == "Metadata"
    for scheme in ("Token", "Bearer"):
        with open_ws(url, additional_headers={"Authorization": f"{scheme} second"}) as ws:
            assert next_message(ws)["type"] == "Metadata"
    refused = _refused(url, subprotocols=["token", "third"])
    assert refused.messages[0]["code"] == "unauthorized" and refused.close_code == CLOSE_POLICY
    # two different tokens on one connection: refused, even if one is valid
    refused = _refused(
        gateway.url("device_id=d", token="first"),
        additional_headers={"Authorization": "Token wrong"},
    )
    assert refused.messages[0]["code"] == "unauthorized"
