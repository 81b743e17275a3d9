"""Opus, FLAC and containers: real recordings encoded here with PyAV, streamed in pieces.

Each stream is cut into pieces that ignore packet and page boundaries (as a socket would),
sent to a live gateway, and checked on both ends: what the client heard (speech events,
results, Acks, close code) and what the spool stored (decoded PCM16 at the session's rate),
and, landed by the real sidecar, what bronze keeps (the bytes as sent beside their PCM).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import (
    COMPRESSED_FORMATS,
    Transcript,
    open_ws,
    read_until_closed,
    speech_stream,
)

from lake_schemas import AUDIO_CHUNKS, Lake
from streaming.gateway.decode import DecodeError, StreamDecoder, encode_stream, open_decoder
from streaming.gateway.protocol import CLOSE_BAD_DATA, CLOSE_NORMAL
from streaming.sidecar.driver import Sidecar, SidecarConfig
from streaming.spool import KIND_CHUNK

pytestmark = pytest.mark.integration

PIECE_BYTES = 1000
"""Bytes per frame sent: about 100 ms of 32 kb/s Opus, far less of FLAC or WAV."""
SPEEDUP = 4.0
"""Audio is sent at this multiple of real time: faster, and live processing would drop some."""


def pieces(data: bytes, size: int = PIECE_BYTES) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def stream_bytes(gateway: Any, query: str, data: bytes, audio_s: float = 0.0) -> Transcript:
    """Send ``data`` in pieces at about 4x the speed of its ``audio_s`` seconds, then close."""
    parts = pieces(data)
    with open_ws(gateway.url(query)) as ws:
        for piece in parts:
            ws.send(piece)
            time.sleep(audio_s / len(parts) / SPEEDUP)
        ws.send(json.dumps({"type": "CloseStream"}))
        return read_until_closed(ws, timeout_s=20)


def stored_pcm(gateway: Any, device_id: str) -> tuple[np.ndarray, set[tuple[str, int]]]:
    rows = [
        r
        for r in gateway.stored().to_pylist()
        if r["kind"] == KIND_CHUNK and r["device_id"] == device_id
    ]
    rows.sort(key=lambda r: r["seq"])
    pcm = np.frombuffer(b"".join(r["pcm"] for r in rows), dtype="<i2")
    return pcm, {(r["encoding"], r["sample_rate"]) for r in rows}


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> np.ndarray:
    return speech_stream(shared_data, words=2, gap_s=0.8)


@pytest.mark.parametrize("name", list(COMPRESSED_FORMATS))
def test_compressed_stream_is_decoded_processed_and_stored(
    make_gateway: Any, speech: np.ndarray, name: str
) -> None:
    gateway = make_gateway()
    kind = COMPRESSED_FORMATS[name]
    lossless = kind.lossless
    data = encode_stream(speech, 16_000, kind.muxer, kind.codec)
    query = f"device_id={name}{kind.query}"
    transcript = stream_bytes(gateway, query, data, speech.size / 16_000)

    assert transcript.close_code == CLOSE_NORMAL, transcript.of("Error")
    assert not transcript.of("Error")
    frames = len(pieces(data))
    assert transcript.max_ack == frames - 1 or transcript.max_ack == frames, "every frame acked"
    assert len(transcript.of("SpeechStarted")) == 2
    assert len([r for r in transcript.of("Results") if r["is_final"]]) == 2
    closing = transcript.of("Metadata")[-1]
    assert closing["duration"] == pytest.approx(speech.size / 16_000, abs=0.01)

    pcm, formats = stored_pcm(gateway, name)
    assert formats == {("linear16", 16_000)}, "bronze gets decoded PCM16 at the session rate"
    assert pcm.size == speech.size
    if lossless:
        assert np.array_equal(pcm, speech)
    else:  # Opus is lossy: the decoded signal follows the original closely
        correlation = np.corrcoef(pcm.astype(np.float64), speech.astype(np.float64))[0, 1]
        assert correlation > 0.9


def test_opus_at_a_48k_session_rate_is_stored_at_48k(make_gateway: Any, speech: np.ndarray) -> None:
    gateway = make_gateway()
    data = encode_stream(speech, 16_000, "ogg", "libopus")
    query = "device_id=o48&encoding=opus&sample_rate=48000"
    transcript = stream_bytes(gateway, query, data, speech.size / 16_000)
    assert transcript.close_code == CLOSE_NORMAL
    pcm, formats = stored_pcm(gateway, "o48")
    assert formats == {("linear16", 48_000)} and pcm.size == speech.size * 3
    assert len([r for r in transcript.of("Results") if r["is_final"]]) == 2


@pytest.mark.parametrize(
    ("encoding", "make_bad", "says"),
    [
        ("opus", lambda data: b"not an ogg stream" * 100, "expects a ogg or matroska stream"),
        ("flac", lambda data: data[:30], "undecodable flac"),
        (None, lambda data: data[:30], "undecodable"),
    ],
)
def test_bad_or_truncated_data_is_bad_frame_and_spares_other_sessions(
    make_gateway: Any, speech: np.ndarray, encoding: str | None, make_bad: Any, says: str
) -> None:
    gateway = make_gateway()
    flac = encode_stream(speech, 16_000, "flac", "flac")
    healthy = open_ws(gateway.url("device_id=healthy"))
    try:
        raw = speech.tobytes()
        half = len(raw) // 2
        for start in range(0, half, 3200):
            healthy.send(raw[start : min(start + 3200, half)])
        query = "device_id=bad" + (f"&encoding={encoding}" if encoding else "")
        bad = stream_bytes(gateway, query, make_bad(flac))
        for start in range(half, len(raw), 3200):
            healthy.send(raw[start : start + 3200])
        healthy.send(json.dumps({"type": "CloseStream"}))
        good = read_until_closed(healthy, timeout_s=20)
    finally:
        healthy.close()
    (error,) = bad.of("Error")
    assert error["code"] == "bad_frame" and says in error["message"]
    assert bad.close_code == CLOSE_BAD_DATA
    assert bad.of("Metadata")[-1]["closed_reason"] == "bad_frame"
    assert good.close_code == CLOSE_NORMAL and not good.of("Error")
    assert len([r for r in good.of("Results") if r["is_final"]]) == 2


def test_a_raw_pcm_stream_without_encoding_is_not_taken_for_a_container() -> None:
    assert open_decoder("linear16", False, 16_000, b"\x01\x00" * 800) is None
    assert open_decoder("linear16", True, 16_000, b"RIFF" + b"\x00" * 40) is None
    assert open_decoder("linear16", False, 16_000, b"RIFF" + b"\x00" * 40) is not None


def test_decoder_output_does_not_depend_on_how_the_bytes_are_cut(speech: np.ndarray) -> None:
    data = encode_stream(speech, 16_000, "flac", "flac")
    outputs = []
    for size in (7, 333, 4096, len(data)):
        decoder = StreamDecoder(16_000, "flac")
        pcm = b"".join(decoder.feed(piece) for piece in pieces(data, size)) + decoder.close()
        outputs.append(pcm)
    assert all(out == speech.tobytes() for out in outputs)


def test_a_stream_that_ends_before_any_audio_is_an_error() -> None:
    decoder = StreamDecoder(16_000, "ogg")
    assert decoder.feed(b"OggS") == b""
    with pytest.raises(DecodeError):
        decoder.close()


def land(spool_dir: Path, lake_dir: Path) -> Lake:
    """Land every sealed segment of ``spool_dir`` with the real sidecar (in this process)."""
    config = SidecarConfig(spool_dir=spool_dir, state_dir=lake_dir.parent / "sidecar-state")
    sidecar = Sidecar(Lake(lake_dir), config)
    while sidecar.land_once() is not None:
        pass
    return Lake(lake_dir)


def test_bronze_keeps_the_bytes_as_received_and_their_pcm(
    make_gateway: Any, speech: np.ndarray, tmp_path: Path
) -> None:
    """Each compressed frame lands once with its bytes exactly as sent; decoding them again
    gives the PCM that landed beside them. A raw PCM stream stores its bytes once, in pcm."""
    gateway = make_gateway()
    sent: dict[str, tuple[bytes, str | None, str]] = {}
    for name, kind in COMPRESSED_FORMATS.items():
        data = encode_stream(speech, 16_000, kind.muxer, kind.codec)
        assert stream_bytes(gateway, f"device_id=b-{name}{kind.query}", data).close_code == 1000
        sent[f"b-{name}"] = (data, kind.encoding, kind.container)
    raw = speech.tobytes()
    assert stream_bytes(gateway, "device_id=b-raw", raw[: len(raw) // 2 * 2]).close_code == 1000
    gateway.seal()
    bronze = land(gateway.spool_dir, tmp_path / "lake").read(AUDIO_CHUNKS).to_pylist()

    for name, (data, encoding, demuxer) in sent.items():
        rows = sorted((r for r in bronze if r["device_id"] == name), key=lambda r: r["seq"])
        frames = pieces(data)
        assert [r["seq"] for r in rows] == list(range(len(rows))), "every chunk once"
        assert [r["received"] for r in rows[: len(frames)]] == frames, "bytes as sent, per frame"
        assert all(r["received"] == b"" for r in rows[len(frames) :]), "the decoder's tail"
        assert {(r["received_encoding"], r["received_container"]) for r in rows} == {
            (encoding, demuxer)
        }
        assert {r["encoding"] for r in rows} == {"linear16"}
        decoder = StreamDecoder(16_000, demuxer)
        again = decoder.feed(b"".join(r["received"] for r in rows)) + decoder.close()
        assert again == b"".join(r["pcm"] for r in rows)
        assert sum(r["num_samples"] for r in rows) == speech.size
    rows = [r for r in bronze if r["device_id"] == "b-raw"]
    assert rows and all(r["received"] is None and r["received_container"] is None for r in rows)
    assert b"".join(r["pcm"] for r in sorted(rows, key=lambda r: r["seq"])) == raw
