"""Container framing: where a compressed stream's header ends and where its units start.

The decoder (:mod:`streaming.gateway.decode`) hands bytes to FFmpeg, which wants a stream from
its first byte. Two facts about the bytes themselves it cannot give, parsed here from the
container's own framing (no decoding): how long the stream's *header* is (what a fresh decoder
must be primed with, :func:`header_length`), and where, in bytes that begin mid-stream (a
resumed stream), the first *unit* starts that a primed decoder can take (:func:`unit_start`):
an Ogg page, a FLAC frame, a WebM block or cluster, a whole WAV sample frame.
"""

from __future__ import annotations

import struct

CONTAINER_MAGIC: dict[bytes, str] = {
    b"RIFF": "wav",
    b"OggS": "ogg",
    b"fLaC": "flac",
    b"\x1a\x45\xdf\xa3": "matroska",
}
"""First four bytes of the containers recognised when a client sends no ``encoding``."""
MAX_WAV_HEADER_BYTES = 64 * 1024
"""A WAV stream whose ``data`` chunk has not started within this many bytes is refused."""
MAX_HEADER_BYTES = 256 * 1024
"""A header longer than this is not kept (a stream with such a header cannot be resumed on
a fresh decoder); FLAC's metadata, with a padding block or a picture, is the long one."""
MAX_RESYNC_BYTES = 256 * 1024
"""Resumed bytes searched for the first unit start before the stream is declared broken."""
MATROSKA_CLUSTER = b"\x1f\x43\xb6\x75"
_MATROSKA_SEGMENT = b"\x18\x53\x80\x67"
_MATROSKA_SIMPLE_BLOCK = 0xA3
_MATROSKA_NEXT_IDS = (0xA3, 0xA0, 0x1F, 0x1C)
"""First bytes of the elements that may follow a block: SimpleBlock, BlockGroup, Cluster, Cues."""
_OGG_NO_PACKET_ENDS = 2**64 - 1
"""The granule position (-1) of an Ogg page on which no packet ends; header pages carry 0."""
_WAV_SAMPLE_FORMATS = {
    (1, 8): "u8",
    (1, 16): "s16le",
    (1, 24): "s24le",
    (1, 32): "s32le",
    (3, 32): "f32le",
    (3, 64): "f64le",
    (6, 8): "alaw",
    (7, 8): "mulaw",
}
"""(WAVE format tag, bits per sample) → FFmpeg's raw demuxer for the samples that follow."""


class DecodeError(ValueError):
    """The stream's bytes cannot be decoded; the message says what was wrong."""


def parse_wav_header(head: bytes) -> tuple[int, str, int, int] | None:
    """(offset of the first sample, raw format, channels, Hz) of a WAV header, or None while
    more bytes are needed; raises :class:`DecodeError` when it is no PCM WAV.

    Parsed here rather than by FFmpeg's WAV demuxer because that one reads 64 KiB ahead before
    it returns the first sample (2 s of 16 kHz audio: too late for live results).
    """
    if len(head) >= 12 and (head[:4] != b"RIFF" or head[8:12] != b"WAVE"):
        raise DecodeError("not a RIFF/WAVE stream")
    position, fmt = 12, None
    while position + 8 <= len(head):
        chunk_id = head[position : position + 4]
        (size,) = struct.unpack_from("<I", head, position + 4)
        body = position + 8
        if chunk_id == b"data":
            if fmt is None:
                raise DecodeError("WAV data chunk before its fmt chunk")
            return (body, *fmt)
        if body + size > len(head):
            break
        if chunk_id == b"fmt ":
            if size < 16:
                raise DecodeError("WAV fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, body)
            if tag == 0xFFFE and size >= 26:  # WAVE_FORMAT_EXTENSIBLE: the tag is in the GUID
                (tag,) = struct.unpack_from("<H", head, body + 24)
            raw = _WAV_SAMPLE_FORMATS.get((tag, bits))
            if raw is None or not 1 <= channels <= 8 or not rate:
                raise DecodeError(
                    f"unsupported WAV format (tag {tag}, {bits} bits, {channels} channels)"
                )
            fmt = (raw, channels, rate)
        position = body + size + (size & 1)
    if len(head) > MAX_WAV_HEADER_BYTES:
        raise DecodeError(f"no WAV data chunk in the first {MAX_WAV_HEADER_BYTES} bytes")
    return None


def _ogg_page_length(data: bytes, at: int) -> int | None:
    """Length of the Ogg page at ``at`` (None while its header is incomplete)."""
    if len(data) < at + 27:
        return None
    segments = data[at + 26]
    if len(data) < at + 27 + segments:
        return None
    return 27 + segments + sum(data[at + 27 : at + 27 + segments])


def _ogg_header_length(data: bytes) -> int | None:
    """Bytes of the leading pages with granule position 0 or -1 (identification, comments)."""
    position = 0
    while True:
        length = _ogg_page_length(data, position)
        if length is None or len(data) < position + length:
            return None
        if data[position : position + 4] != b"OggS":
            raise DecodeError("not an Ogg stream: a page does not start with OggS")
        (granule,) = struct.unpack_from("<Q", data, position + 6)
        if granule not in (0, _OGG_NO_PACKET_ENDS):
            return position
        position += length


def _flac_header_length(data: bytes) -> int | None:
    """``fLaC`` and every metadata block, up to the one flagged last."""
    position = 4
    while len(data) >= position + 4:
        flags = data[position]
        position += 4 + int.from_bytes(data[position + 1 : position + 4], "big")
        if flags & 0x80:
            return position if len(data) >= position else None
    return None


def _ebml_vint(data: bytes, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-length integer at ``at`` (None: incomplete)."""
    if at >= len(data) or data[at] == 0:
        return None
    length = 8 - data[at].bit_length() + 1
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at : at + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, length


def _matroska_header_length(data: bytes) -> int | None:
    """The EBML header and the segment's elements up to its first Cluster."""
    position = 0
    while True:
        element = _ebml_vint(data, position, keep_marker=True)
        if element is None:
            return None
        element_id, id_length = element
        size = _ebml_vint(data, position + id_length, keep_marker=False)
        if size is None:
            return None
        raw = element_id.to_bytes(id_length, "big")
        if raw == MATROSKA_CLUSTER:
            return position
        body = position + id_length + size[1]
        # The segment is entered (its size is often unknown in a live stream), others skipped.
        position = body if raw == _MATROSKA_SEGMENT else body + size[0]


def header_length(container: str, head: bytes) -> int | None:
    """Bytes of a stream's header, judged on its first bytes; None while more are needed.

    Raises :class:`DecodeError` when the bytes are not the container's (a WAV that is not
    PCM, an Ogg page without its capture pattern).
    """
    if container == "wav":
        parsed = parse_wav_header(head)
        return None if parsed is None else parsed[0]
    if container == "ogg":
        return _ogg_header_length(head)
    if container == "flac":
        return _flac_header_length(head) if head[:4] == b"fLaC" else None
    if container == "matroska":
        return _matroska_header_length(head)
    return None


def _crc8(data: bytes) -> int:
    """CRC-8 with polynomial 0x07, as a FLAC frame header carries it."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _flac_frame_header_length(data: bytes, at: int) -> int | None:
    """Length of a valid FLAC frame header at ``at`` with its CRC-8, 0 if none is there,
    None while more bytes are needed to tell."""
    if len(data) < at + 5:
        return None
    if data[at] != 0xFF or data[at + 1] not in (0xF8, 0xF9):
        return 0
    block_code, rate_code = data[at + 2] >> 4, data[at + 2] & 0x0F
    if block_code == 0 or rate_code == 0x0F or data[at + 3] & 0x01:
        return 0
    first = data[at + 4]
    coded = 0 if first < 0x80 else 8 - (~first & 0xFF).bit_length() - 1
    if first >= 0x80 and not 1 <= coded <= 6:
        return 0
    length = 5 + coded
    length += {6: 1, 7: 2}.get(block_code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if len(data) < at + length + 1:
        return None
    return length + 1 if _crc8(data[at : at + length]) == data[at + length] else 0


def _matroska_block_ok(data: bytes, at: int) -> bool | None:
    """Is a SimpleBlock of track 1 at ``at``, followed by a known element (None: wait)?

    Checked cheapest first, so that a stray 0xA3 inside audio is refused on the bytes at hand:
    a size of at most two bytes (an audio block is under 16 KiB), track number 1, no reserved
    flag bits; only then is the element after the block awaited.
    """
    size = _ebml_vint(data, at + 1, keep_marker=False)
    if size is None:
        return None if len(data) < at + 9 else False
    track = at + 1 + size[1]
    if size[1] > 2:
        return False
    if len(data) < track + 4:
        return None
    if data[track] != 0x81 or data[track + 3] & 0x70:
        return False
    end = track + size[0]
    if end >= len(data):
        return None
    return data[end] in _MATROSKA_NEXT_IDS


def unit_start(container: str, data: bytes, phase: int = 0) -> int | None:
    """Offset of the first decodable unit in resumed bytes (None: more bytes are needed).

    ``phase`` is, for WAV, the byte offset of the resumed bytes from the first sample modulo
    the sample frame size (0 when the client cut the stream on whole frames, as clients do).
    """
    if container == "wav":
        return phase
    if container == "ogg":
        at = data.find(b"OggS\x00")
        return at if at >= 0 else None
    if container == "flac":
        at = data.find(b"\xff")
        while at >= 0:
            found = _flac_frame_header_length(data, at)
            if found is None:
                return None
            if found:
                return at
            at = data.find(b"\xff", at + 1)
        return None
    for at in range(len(data)):  # matroska: a Cluster, or a SimpleBlock inside one
        if data[at : at + 4] == MATROSKA_CLUSTER:
            return at
        if data[at] == _MATROSKA_SIMPLE_BLOCK:
            ok = _matroska_block_ok(data, at)
            if ok is None:
                return None
            if ok:
                return at
    return None


MATROSKA_RESUMED_CLUSTER = MATROSKA_CLUSTER + b"\x01\xff\xff\xff\xff\xff\xff\xff\xe7\x81\x00"
"""A Cluster of unknown size with timecode 0: what resumed WebM blocks are placed in (their
own cluster's start, with its timecode, was sent before the resume)."""


def sniff_container(first_bytes: bytes) -> str | None:
    """The FFmpeg demuxer for a container recognised by its magic bytes, or None."""
    return CONTAINER_MAGIC.get(first_bytes[:4])
