"""A compressed stream resumed on a fresh decoder, as a new process would serve it.

The client streams part of a real recording (encoded here with PyAV), waits for its Acks and
drops the connection. The gateway then forgets the stream's decoder and its header, as a
restarted process would not have them; the resume must find the header where it was saved
durably (the spool's ``priming/`` folder), prime a new decoder with it, and decode the rest.
Checked in the spool: every chunk once with its bytes as sent, and PCM that is the
recording's own audio on both sides of the resume point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import (
    COMPRESSED_FORMATS,
    next_message,
    open_ws,
    read_until_closed,
    speech_stream,
)

from streaming.gateway.decode import encode_stream
from streaming.gateway.protocol import CLOSE_NORMAL
from streaming.spool import KIND_CHUNK
from streaming.spool.priming import load_decoder_priming

pytestmark = pytest.mark.integration

FRAME_BYTES = 1000
MAX_LOST_S = {"ogg": 1.1, "matroska": 0.3, "flac": 1.0, "wav": 0.3}
"""Audio the new decoder cannot give back (it stays in the ``received`` bytes): the unit the
resume point cuts (an Ogg page: 1 s as FFmpeg's muxer writes them; a WebM block; a FLAC
frame) and what the old decoder held undecoded when it went (FFmpeg's FLAC parser looks ten
frames ahead: 0.72 s of these 1152-sample frames; the WAV demuxer one 1024-sample packet)."""


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> np.ndarray:
    return speech_stream(shared_data, words=2, gap_s=0.8)


def _forget_decoder(gateway: Any, session_id: str) -> None:
    """What a new process would lack: the decoder and the header it was fed."""

    async def forget() -> None:
        stream = gateway.gateway.streams[session_id]
        stream.decoder, stream.format_known, stream.priming = None, False, None

    gateway.call(forget())


def _wait_for_ack(ws: Any, seq: int) -> None:
    while True:
        message = next_message(ws, timeout_s=10, skip_acks=False)
        if message["type"] == "Ack" and message["seq"] >= seq:
            return


@pytest.mark.parametrize("name", list(COMPRESSED_FORMATS))
def test_a_resume_on_a_fresh_decoder_decodes_the_rest_and_stores_every_chunk_once(
    make_gateway: Any, speech: np.ndarray, name: str
) -> None:
    gateway = make_gateway()
    kind = COMPRESSED_FORMATS[name]
    data = encode_stream(speech, 16_000, kind.muxer, kind.codec)
    frames = [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]
    cut = len(frames) * 3 // 5  # frames sent before the drop; the resume point cuts a unit
    query = f"device_id=r-{name}{kind.query}"
    with open_ws(gateway.url(query)) as ws:
        first = next_message(ws)
        session_id, token = first["session_id"], first["resume_token"]
        for frame in frames[:cut]:
            ws.send(frame)
        _wait_for_ack(ws, cut - 1)
    priming = load_decoder_priming(gateway.spool_dir, session_id)
    assert priming is not None and priming.container == kind.container
    assert data.startswith(priming.header) and len(priming.header) < len(frames[0]) + 8300
    _forget_decoder(gateway, session_id)

    resume = f"{query}&session_id={session_id}&resume_token={token}&resume_from={cut - 1}"
    with open_ws(gateway.url(resume)) as ws:
        for frame in frames[cut - 1 :]:  # the last acknowledged frame again: a duplicate
            ws.send(frame)
        ws.send(json.dumps({"type": "CloseStream"}))
        transcript = read_until_closed(ws, timeout_s=20)
    assert transcript.close_code == CLOSE_NORMAL, transcript.of("Error")
    warnings = [w["code"] for w in transcript.of("Warning")]
    assert warnings.count("decoder_restarted") == 1
    assert transcript.of("Metadata")[-1]["totals"]["duplicate_chunks"] == 1
    assert load_decoder_priming(gateway.spool_dir, session_id) is None, "dropped at the end"

    rows = sorted(
        (r for r in gateway.stored().to_pylist() if r["kind"] == KIND_CHUNK),
        key=lambda r: r["seq"],
    )
    assert [r["seq"] for r in rows] == list(range(len(rows))), "every chunk once"
    assert [r["received"] for r in rows[: len(frames)]] == frames
    assert all(r["received"] == b"" for r in rows[len(frames) :])
    before = np.frombuffer(b"".join(r["pcm"] for r in rows[:cut]), "<i2")
    after = np.frombuffer(b"".join(r["pcm"] for r in rows[cut:]), "<i2")
    assert before.size > 8_000 and after.size > 8_000  # half a second each, at least
    missing_s = (speech.size - before.size - after.size) / 16_000
    assert 0 <= missing_s < MAX_LOST_S[kind.container], "only audio around the resume point is lost"
    if kind.lossless:  # each side is exactly the recording's own samples
        assert np.array_equal(before, speech[: before.size])
        assert np.array_equal(after, speech[speech.size - after.size :])
    else:
        for got, want in ((before, speech[: before.size]), (after, speech[-after.size :])):
            assert np.corrcoef(got.astype(float), want.astype(float))[0, 1] > 0.95
