"""Container framing on real recordings encoded with PyAV, checked against FFmpeg's own demuxer.

FFmpeg reports where each packet of a stream lies (``packet.pos``); the header this module
finds must end at or just before the first one, and a unit found in bytes cut anywhere must
be one FFmpeg knows too.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from gateway_support import COMPRESSED_FORMATS, speech_stream

from streaming.gateway.containers import header_length, unit_start
from streaming.gateway.decode import encode_stream

FORMATS = [(k.muxer, k.codec, k.container) for k in COMPRESSED_FORMATS.values()]


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> np.ndarray:
    return speech_stream(shared_data, words=2, gap_s=0.8)


def _packet_positions(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        return [p.pos for p in container.demux(stream) if p.size and p.pos is not None]


@pytest.mark.parametrize(("muxer", "codec", "container"), FORMATS)
def test_the_header_ends_where_the_first_packet_begins(
    speech: np.ndarray, muxer: str, codec: str, container: str
) -> None:
    data = encode_stream(speech, 16_000, muxer, codec)
    first = _packet_positions(data)[0]
    length = header_length(container, data)
    assert length is not None
    # Ogg, FLAC, WAV: the first packet's page or frame starts right there; WebM: its cluster
    # and block headers (a dozen bytes) come first.
    assert 0 < length <= first and first - length <= 16
    assert header_length(container, data[: length - 1]) is None, "incomplete: more needed"


@pytest.mark.parametrize(("muxer", "codec", "container"), FORMATS[:3])
def test_a_unit_found_in_bytes_cut_anywhere_is_one_ffmpeg_knows(
    speech: np.ndarray, muxer: str, codec: str, container: str
) -> None:
    data = encode_stream(speech, 16_000, muxer, codec)
    header = header_length(container, data)
    assert header is not None
    positions = set(_packet_positions(data))
    last = max(positions) - 16  # a cut before it has a unit after it
    for cut in np.linspace(header + 1, last, 7).astype(int).tolist():
        found = unit_start(container, data[cut:])
        assert found is not None
        at = cut + found
        if container == "ogg":
            assert data[at : at + 4] == b"OggS"
        elif container == "flac":
            assert at in positions
        else:  # a SimpleBlock (0xA3) whose payload FFmpeg reads a few bytes further on
            assert data[at] == 0xA3 or data[at : at + 4] == b"\x1f\x43\xb6\x75"
            assert any(0 < p - at <= 8 for p in positions)
