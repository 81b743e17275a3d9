"""A replayable corpus of hostile inputs, sent over real connections beside a good session.

``corpus/hostile.json`` lists connections (a query and the frames to send: text, repeated
text, hex bytes). Each is replayed against a real gateway while a well-behaved device streams
real speech on another connection. A hostile connection may get ``Error`` messages and a
documented close code, never 1011 (an internal error); the good session must keep getting
``Results`` and ``Ack``s throughout, and the server must stay healthy. Add a case by adding
an entry.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (
    TEST_CONFIG,
    GatewayThread,
    chunks,
    open_ws,
    read_until_closed,
    speech_stream,
)
from websockets.exceptions import ConnectionClosed

from streaming.gateway.protocol import CLOSE_INTERNAL

CORPUS = json.loads((Path(__file__).parent / "corpus" / "hostile.json").read_text())
DOCUMENTED_CLOSES = {1000, 1003, 1008, 1009, 1013}


def _frames(entry: dict[str, Any]) -> list[str | bytes]:
    out: list[str | bytes] = []
    for frame in entry["frames"]:
        if "hex" in frame:
            payload: str | bytes = bytes.fromhex(frame["hex"])
        elif "text_repeat" in frame:
            piece, times = frame["text_repeat"]
            payload = frame.get("wrap", "%s") % (piece * times)
        else:
            payload = frame["text"]
        out += [payload] * frame.get("repeat", 1)
    return out


def _replay(gateway: GatewayThread, entry: dict[str, Any]) -> int | None:
    """Send one hostile connection's frames; its close code (None: still open, then closed)."""
    try:
        with open_ws(gateway.url(entry["query"])) as ws:
            for frame in _frames(entry):
                ws.send(frame)
            ws.send(json.dumps({"type": "CloseStream"}))
            return read_until_closed(ws, timeout_s=10).close_code
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    except Exception as refused:  # a refused handshake: an HTTP status, not a crash
        return int(getattr(getattr(refused, "response", None), "status_code", 0)) or None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    started = GatewayThread(TEST_CONFIG, tmp_path_factory.mktemp("spool")).start()
    yield started
    started.stop()


@pytest.mark.parametrize(
    "entry",
    [pytest.param(e, id=e["name"]) for e in CORPUS],
)
def test_hostile_input_beside_a_good_session(
    gateway: GatewayThread, entry: dict[str, Any], shared_data: Path
) -> None:
    audio = chunks(speech_stream(shared_data, words=2))
    good: dict[str, Any] = {}

    def well_behaved() -> None:
        with open_ws(gateway.url("device_id=good-device")) as ws:
            for frame in audio:
                ws.send(frame)
            ws.send(json.dumps({"type": "CloseStream"}))
            good["transcript"] = read_until_closed(ws, timeout_s=30)

    device = threading.Thread(target=well_behaved)
    device.start()
    code = _replay(gateway, entry)
    device.join(60)
    transcript = good["transcript"]
    assert code != CLOSE_INTERNAL, f"{entry['name']}: internal error"
    assert code is None or code in DOCUMENTED_CLOSES or 400 <= code < 500, code
    assert transcript.of("Results"), "the good session kept getting results"
    assert transcript.max_ack == len(audio) - 1, "and every chunk of it was acknowledged"
