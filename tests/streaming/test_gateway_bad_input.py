"""Every kind of bad input, each over a real connection, while a healthy session streams on.

The healthy session starts before the first bad client and streams real speech throughout;
the last test checks that it saw nothing of the others: no Error, every chunk acknowledged,
its utterances found, a normal close.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import (
    GatewayThread,
    Transcript,
    chunks,
    next_message,
    open_ws,
    read_until_closed,
    speech_stream,
)
from websockets.exceptions import InvalidStatus

from streaming.gateway.protocol import CLOSE_BAD_DATA, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_LARGE

pytestmark = pytest.mark.integration


class HealthySession(threading.Thread):
    """Streams real speech at 4× real time until told to stop, then closes properly."""

    def __init__(self, url: str, audio: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.audio = audio
        self.stop_event = threading.Event()
        self.sent = 0
        self.loops = 0
        self.transcript: Transcript | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open_ws(self.url) as ws:
                while not self.stop_event.is_set() or self.loops == 0:
                    for frame in chunks(self.audio):
                        ws.send(frame)
                        self.sent += 1
                        time.sleep(0.025)
                    self.loops += 1
                ws.send(json.dumps({"type": "CloseStream"}))
                self.transcript = read_until_closed(ws, timeout_s=20)
        except BaseException as exc:  # reported by the last test
            self.error = exc


@pytest.fixture(scope="module")
def healthy(gateway_module: GatewayThread, shared_data: Path) -> Iterator[HealthySession]:
    session = HealthySession(
        gateway_module.url("device_id=healthy-1&interim_results=true"),
        speech_stream(shared_data, words=2),
    )
    session.start()
    time.sleep(0.3)
    yield session
    session.stop_event.set()
    session.join(30)


def _refused(url: str, **kwargs: Any) -> Transcript:
    with open_ws(url, **kwargs) as ws:
        return read_until_closed(ws)


@pytest.mark.parametrize(
    ("query", "code", "error"),
    [
        ("device_id=d&encoding=speex", CLOSE_BAD_DATA, "bad_format"),
        ("device_id=d&sample_rate=4000", CLOSE_BAD_DATA, "bad_param"),
        ("device_id=d&channels=2", CLOSE_BAD_DATA, "bad_param"),
        ("device_id=..%2F..%2Fetc%2Fpasswd", CLOSE_BAD_DATA, "bad_id"),
        ("device_id=d&session_id=%3Cscript%3E", CLOSE_BAD_DATA, "bad_id"),
        ("encoding=linear16&utterance_end_ms=999", CLOSE_BAD_DATA, "bad_param"),
    ],
)
def test_bad_query_gets_error_and_close(
    healthy: HealthySession, gateway_module: GatewayThread, query: str, code: int, error: str
) -> None:
    transcript = _refused(gateway_module.url(query))
    assert [m["type"] for m in transcript.messages] == ["Error"]
    assert transcript.messages[0]["code"] == error
    assert transcript.close_code == code


@pytest.mark.parametrize(
    ("token", "header"),
    [(None, None), ("wrong", None), (None, "Token wrong"), (None, "Basic dGVzdA==")],
)
def test_bad_or_missing_token_is_closed_with_1008(
    healthy: HealthySession, gateway_module: GatewayThread, token: str | None, header: str | None
) -> None:
    headers = {"Authorization": header} if header else None
    transcript = _refused(
        gateway_module.url("device_id=d", token=token), additional_headers=headers
    )
    assert transcript.messages[0]["code"] == "unauthorized"
    assert transcript.close_code == CLOSE_POLICY


def test_token_in_the_authorization_header_is_accepted(
    healthy: HealthySession, gateway_module: GatewayThread
) -> None:
    url = gateway_module.url("device_id=d", token=None)
    with open_ws(url, additional_headers={"Authorization": "Token test-token"}) as ws:
        assert next_message(ws)["type"] == "Metadata"


@pytest.mark.parametrize("frame", [b"\x01\x02\x03", b""], ids=["odd-bytes", "empty"])
def test_frame_that_is_not_whole_samples_closes_1003(
    healthy: HealthySession, gateway_module: GatewayThread, frame: bytes
) -> None:
    with open_ws(gateway_module.url("device_id=d")) as ws:
        assert next_message(ws)["type"] == "Metadata"
        ws.send(np.zeros(160, np.int16).tobytes())
        ws.send(frame)
        transcript = read_until_closed(ws)
    errors = transcript.of("Error")
    assert errors and errors[0]["code"] == "bad_frame"
    assert transcript.close_code == CLOSE_BAD_DATA


def test_frame_over_the_size_limit_closes_1009(
    healthy: HealthySession, gateway_module: GatewayThread
) -> None:
    with open_ws(gateway_module.url("device_id=d")) as ws:
        assert next_message(ws)["type"] == "Metadata"
        ws.send(b"\x00" * (gateway_module.config.max_frame_bytes + 2))
        transcript = read_until_closed(ws)
    assert transcript.close_code == CLOSE_TOO_LARGE


@pytest.mark.parametrize(
    ("text", "code"),
    [("{not json", "bad_json"), ('{"type":"Reboot"}', "unknown_type"), ("[]", "bad_message")],
)
def test_bad_text_frames_get_an_error_and_the_session_goes_on(
    healthy: HealthySession, gateway_module: GatewayThread, text: str, code: str
) -> None:
    with open_ws(gateway_module.url("device_id=d")) as ws:
        assert next_message(ws)["type"] == "Metadata"
        ws.send(text)
        error = next_message(ws)
        assert (error["type"], error["code"]) == ("Error", code)
        ws.send(json.dumps({"type": "KeepAlive"}))
        ws.send(np.zeros(1600, np.int16).tobytes())
        ws.send(json.dumps({"type": "CloseStream"}))
        transcript = read_until_closed(ws)
    assert transcript.close_code == CLOSE_NORMAL
    assert transcript.max_ack == 0
    assert transcript.of("Metadata")[-1]["totals"]["chunks"] == 1


def test_oversized_headers_are_refused(
    healthy: HealthySession, gateway_module: GatewayThread
) -> None:
    with pytest.raises(InvalidStatus) as caught:
        open_ws(gateway_module.url("device_id=d"), additional_headers={"X-Junk": "a" * 9000})
    assert caught.value.response.status_code == 431
    with pytest.raises(InvalidStatus) as caught:
        open_ws(gateway_module.url("device_id=" + "d" * 9000))
    assert caught.value.response.status_code == 414


def test_slow_handshake_is_cut_off(healthy: HealthySession, gateway_module: GatewayThread) -> None:
    """A client that never finishes its request is dropped after the open timeout."""
    with socket.create_connection(("127.0.0.1", gateway_module.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/listen?device_id=slow HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        data = sock.recv(4096)
        waited = time.monotonic() - started
    assert waited < gateway_module.config.open_timeout_s + 3
    assert data == b"" or data.startswith(b"HTTP/1.1 5"), data[:80]


def test_client_that_never_reads_is_closed_when_idle(
    healthy: HealthySession, gateway_module: GatewayThread
) -> None:
    """Sends a burst, reads nothing, goes quiet: the server closes it; others carry on."""
    with open_ws(gateway_module.url("device_id=mute")) as ws:
        for _ in range(40):
            ws.send(np.zeros(1600, np.int16).tobytes())
        time.sleep(gateway_module.config.idle_timeout_s + 1.0)
        transcript = read_until_closed(ws)
    assert transcript.of("Error")[-1]["code"] == "idle_timeout"
    assert transcript.close_code == CLOSE_POLICY
    assert transcript.max_ack == 39


def test_healthy_session_was_unaffected(healthy: HealthySession) -> None:
    healthy.stop_event.set()
    healthy.join(30)
    assert healthy.error is None, repr(healthy.error)
    transcript = healthy.transcript
    assert transcript is not None
    assert transcript.close_code == CLOSE_NORMAL
    assert not transcript.of("Error") and not transcript.of("Warning")
    assert transcript.max_ack == healthy.sent - 1
    closing = transcript.of("Metadata")[-1]
    assert closing["final"] and closing["totals"]["chunks"] == healthy.sent
    finals = [r for r in transcript.of("Results") if r["is_final"]]
    # two words per loop; the endpointer must find (nearly) all of them
    assert len(finals) >= 2 * healthy.loops - 1
    assert all(r["label"] is None and r["model_version"] is None for r in finals)
    assert len(transcript.of("UtteranceEnd")) == len(finals)
