"""Incremental decoding of compressed and containerised audio (Opus, FLAC, WAV, Ogg, WebM).

A client may send Ogg/WebM Opus (what browsers' ``MediaRecorder`` writes), FLAC or a WAV file
in arbitrary pieces; a piece need not end on a packet or page. FFmpeg's demuxers (through
PyAV) want to *pull* bytes, so each compressed stream gets one decoder thread that pulls from
a buffer the gateway pushes into. :meth:`StreamDecoder.feed` pushes one frame and waits until
the thread has decoded everything that frame completed (it then blocks, starved, in ``read``);
the PCM that came out is returned at once, resampled to the session's rate as 16-bit mono.
The wait is the decode time of one frame (``decode`` in docs/performance.md), short enough to
keep on the event loop, and it never touches another session's decoder.

Bad data raises :class:`DecodeError`, which the gateway turns into ``bad_frame``/1003 for this
session only. A stream that ends without any decodable audio (a truncated header) raises it
at :meth:`StreamDecoder.close`.

**Resuming on a fresh decoder.** A container's header (Ogg's identification and comment pages,
FLAC's ``fLaC`` and metadata blocks, WebM's EBML header, segment info and tracks, a WAV header)
comes only at the stream's start, so a decoder that starts mid-stream (a resume served by a
new process) cannot decode alone. Each decoder keeps its stream's header
(:attr:`StreamDecoder.header`, found by :func:`header_length`); :meth:`StreamDecoder.resuming`
primes a new decoder with it and then skips the resumed bytes to the first unit that starts
in them (an Ogg page, a FLAC frame, a WebM block, a whole sample frame of WAV), since a resumed
chunk begins wherever the client cut the stream. Nothing else is carried: Opus and FLAC units
decode from the header alone (an Opus decoder settles within its first packet).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator

import av
import av.error
import numpy as np

CONTAINER_MAGIC: dict[bytes, str] = {
    b"RIFF": "wav",
    b"OggS": "ogg",
    b"fLaC": "flac",
    b"\x1a\x45\xdf\xa3": "matroska",
}
"""First four bytes of the containers recognised when a client sends no ``encoding``."""
CONTAINERS_FOR_ENCODING = {"opus": ("ogg", "matroska"), "flac": ("flac",)}
"""The containers each compressed ``encoding`` may come in, told apart by the first bytes."""
FEED_TIMEOUT_S = 5.0
"""Longest wait for the decoder thread on one frame before the stream is declared broken."""
_READ_BLOCK = 4096
"""Bytes FFmpeg asks for per read (its I/O buffer); a read returns whatever is buffered."""
MAX_WAV_HEADER_BYTES = 64 * 1024
"""A WAV stream whose ``data`` chunk has not started within this many bytes is refused."""
MAX_HEADER_BYTES = 256 * 1024
"""A header longer than this is not kept (a stream with such a header cannot be resumed on
a fresh decoder); FLAC's metadata, with a padding block or a picture, is the long one."""
MAX_RESYNC_BYTES = 256 * 1024
"""Resumed bytes searched for the first unit start before the stream is declared broken."""
_MATROSKA_CLUSTER = b"\x1f\x43\xb6\x75"
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
        if raw == _MATROSKA_CLUSTER:
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
    """Is a whole SimpleBlock of track 1 at ``at``, followed by a known element (None: wait)?"""
    size = _ebml_vint(data, at + 1, keep_marker=False)
    if size is None:
        return None if len(data) < at + 9 else False
    track = at + 1 + size[1]
    end = track + size[0]
    if end >= len(data):
        return None if size[0] < MAX_RESYNC_BYTES else False
    return data[track] == 0x81 and data[end] in _MATROSKA_NEXT_IDS


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
        if data[at : at + 4] == _MATROSKA_CLUSTER:
            return at
        if data[at] == _MATROSKA_SIMPLE_BLOCK:
            ok = _matroska_block_ok(data, at)
            if ok is None:
                return None
            if ok:
                return at
    return None


MATROSKA_RESUMED_CLUSTER = _MATROSKA_CLUSTER + b"\x01\xff\xff\xff\xff\xff\xff\xff\xe7\x81\x00"
"""A Cluster of unknown size with timecode 0: what resumed WebM blocks are placed in (their
own cluster's start, with its timecode, was sent before the resume)."""


def sniff_container(first_bytes: bytes) -> str | None:
    """The FFmpeg demuxer for a container recognised by its magic bytes, or None."""
    return CONTAINER_MAGIC.get(first_bytes[:4])


class _Pipe:
    """File-like object FFmpeg reads from: blocks until bytes arrive or the writer closes."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._closed = False
        self._starved = False
        self.cond = threading.Condition()

    def write(self, data: bytes) -> None:
        with self.cond:
            self._buffer += data
            self._starved = False
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self._closed = True
            self.cond.notify_all()

    @property
    def starved(self) -> bool:
        """True while the reader waits for bytes that have not been written (call under cond)."""
        return self._starved and not self._buffer

    def read(self, size: int = -1) -> bytes:
        with self.cond:
            while not self._buffer and not self._closed:
                self._starved = True
                self.cond.notify_all()
                self.cond.wait()
            size = len(self._buffer) if size < 0 else min(size, len(self._buffer))
            out = bytes(self._buffer[:size])
            del self._buffer[:size]
            return out


class StreamDecoder:
    """One compressed stream → PCM16 mono at ``sample_rate`` Hz, fed frame by frame."""

    def __init__(self, sample_rate: int, container: str | None = None) -> None:
        self.sample_rate = sample_rate
        self.container = container
        self.samples_out = 0
        self._pipe = _Pipe()
        self._out: list[np.ndarray] = []
        self._error: str | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name="audio-decode", daemon=True)
        self._started = False
        self._wav_head: bytearray | None = bytearray() if container == "wav" else None
        self._demuxer = container
        self._demuxer_options: dict[str, str] = {}
        self.header: bytes | None = None
        """The stream's header once it is complete (what :meth:`resuming` primes with)."""
        self._head: bytearray | None = bytearray()
        self._resync: bytearray | None = None
        """Resumed bytes held until the first unit that starts in them (see :meth:`resuming`)."""
        self._wav_phase = 0

    @classmethod
    def resuming(cls, sample_rate: int, container: str, header: bytes) -> StreamDecoder:
        """A decoder for a stream resumed mid-way: primed with the stream's ``header``, it
        decodes from the first unit (page, frame, block) that starts in the bytes fed next."""
        decoder = cls(sample_rate, container)
        decoder.header, decoder._head = header, None
        if decoder.feed(header):
            raise DecodeError(f"the saved {container} header decoded to audio; it is no header")
        decoder._resync = bytearray()
        return decoder

    # ---- the gateway's side --------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        """Push one frame; return the PCM16 bytes it completed (possibly none)."""
        if not self._started and self._demuxer is None:
            self.container = self._demuxer = sniff_container(data)
            if self._demuxer == "wav":
                self._wav_head = bytearray()
        if self._head is not None:
            self._keep_header(data)
        if self._resync is not None:
            data = self._after_resync(data)
            if not data:
                return b""
        if self._wav_head is not None:
            data = self._after_wav_header(data)
            if self._wav_head is not None:
                return b""  # still inside the header
        if not self._started:
            self._started = True
            self._thread.start()
        self._pipe.write(data)
        return self._collect(final=False)

    def _keep_header(self, data: bytes) -> None:
        """Collect the first bytes until the header is complete (a few frames at most)."""
        assert self._head is not None
        self._head += data
        try:
            length = header_length(self.container or "", bytes(self._head))
        except DecodeError:  # the decoder itself says what is wrong with the stream
            self._head = None
            return
        if length is not None:
            self.header = bytes(self._head[:length])
            self._head = None
        elif len(self._head) > MAX_HEADER_BYTES:
            self._head = None  # not kept: this stream cannot resume on a fresh decoder

    def _after_resync(self, data: bytes) -> bytes:
        """Resumed bytes from the first unit that starts in them (empty while none has)."""
        assert self._resync is not None and self.container is not None
        self._resync += data
        held = bytes(self._resync)
        start = unit_start(self.container, held, self._wav_phase)
        if start is None:
            if len(held) > MAX_RESYNC_BYTES:
                raise DecodeError(
                    f"no {self.container} unit starts in the first {MAX_RESYNC_BYTES} bytes "
                    "after the resume"
                )
            return b""
        self._resync = None
        resumed = held[start:]
        if self.container == "matroska" and not resumed.startswith(_MATROSKA_CLUSTER):
            resumed = MATROSKA_RESUMED_CLUSTER + resumed
        return resumed

    def _after_wav_header(self, data: bytes) -> bytes:
        """Hold bytes until the WAV header is complete; then decode the rest as raw samples."""
        assert self._wav_head is not None
        self._wav_head += data
        parsed = parse_wav_header(bytes(self._wav_head))
        if parsed is None:
            return b""
        offset, raw, channels, rate = parsed
        rest = bytes(self._wav_head[offset:])
        self._wav_head = None
        self._demuxer = raw
        self._demuxer_options = {"sample_rate": str(rate), "ch_layout": f"{channels}c"}
        return rest

    def close(self) -> bytes:
        """End of stream: decode what is left and stop the thread; return the last PCM."""
        if not self._started:
            raise DecodeError("the stream ended inside its header (truncated?)")
        self._pipe.close()
        tail = self._collect(final=True)
        if self.samples_out == 0 and self._error is None:
            self._error = "the stream ended before any audio could be decoded (truncated?)"
        if self._error is not None:
            raise DecodeError(self._error)
        return tail

    def _collect(self, *, final: bool) -> bytes:
        cond = self._pipe.cond
        with cond:
            ready = cond.wait_for(
                lambda: self._done or (not final and self._pipe.starved), FEED_TIMEOUT_S
            )
            out, self._out = self._out, []
            error = self._error
        if not ready:
            error = f"decoding stalled for {FEED_TIMEOUT_S:g} s"
        if error is not None and not final:
            self._pipe.close()
            raise DecodeError(error)
        pcm = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
        self.samples_out += pcm.size
        return pcm.tobytes()

    # ---- the decoder thread ------------------------------------------------------------
    def _run(self) -> None:
        try:
            for pcm in self._decode():
                with self._pipe.cond:
                    self._out.append(pcm)
        except (av.error.FFmpegError, ValueError, IndexError) as exc:
            with self._pipe.cond:
                self._error = f"undecodable {self.container} audio: {exc}"
        finally:
            with self._pipe.cond:
                self._done = True
                self._pipe.cond.notify_all()

    def _decode(self) -> Iterator[np.ndarray]:
        options = {"probesize": "32", "analyzeduration": "1", **self._demuxer_options}
        with av.open(
            self._pipe,
            mode="r",
            format=self._demuxer,
            options=options,
            buffer_size=_READ_BLOCK,
        ) as container:
            if not container.streams.audio:
                raise ValueError("the container holds no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=self.sample_rate)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        yield out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1).astype(np.int16, copy=False)


def open_decoder(
    encoding: str, encoding_given: bool, sample_rate: int, first_frame: bytes
) -> StreamDecoder | None:
    """The decoder a new stream needs, judged on its first frame; None for raw PCM.

    ``opus``/``flac`` always decode (and raise :class:`DecodeError` when the first bytes are
    not their container's); with no ``encoding`` a recognised container decodes too and
    anything else is taken as raw ``linear16`` (Sonolake's default).
    """
    if encoding in CONTAINERS_FOR_ENCODING:
        container = sniff_container(first_frame)
        if container not in CONTAINERS_FOR_ENCODING[encoding]:
            expected = " or ".join(CONTAINERS_FOR_ENCODING[encoding])
            raise DecodeError(
                f"encoding={encoding} expects a {expected} stream, but the first bytes are "
                f"{first_frame[:4]!r}; send the stream from its first byte"
            )
        return StreamDecoder(sample_rate, container)
    if not encoding_given:
        container = sniff_container(first_frame)
        if container is not None:
            return StreamDecoder(sample_rate, container)
    return None


def encode_stream(samples: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    """16-bit mono ``samples`` at ``rate`` Hz → one encoded file's bytes, in memory.

    For clients, tests and benchmarks that need what a device or browser would send: e.g.
    ``("ogg", "libopus")``, ``("webm", "libopus")``, ``("flac", "flac")``,
    ``("wav", "pcm_s16le")``. Opus is encoded at 48 kHz, its only native rate.
    """
    import io

    out = io.BytesIO()
    codec_rate = 48_000 if codec == "libopus" else rate
    with av.open(out, mode="w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=codec_rate, layout="mono")
        if not isinstance(stream, av.AudioStream):
            raise ValueError(f"{codec} is not an audio codec")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = rate
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout="mono", rate=codec_rate
        )
        for piece in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(piece):
                muxer.mux(packet)
    return out.getvalue()
