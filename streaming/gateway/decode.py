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

    # ---- the gateway's side --------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        """Push one frame; return the PCM16 bytes it completed (possibly none)."""
        if not self._started and self._demuxer is None:
            self.container = self._demuxer = sniff_container(data)
            if self._demuxer == "wav":
                self._wav_head = bytearray()
        if self._wav_head is not None:
            data = self._after_wav_header(data)
            if self._wav_head is not None:
                return b""  # still inside the header
        if not self._started:
            self._started = True
            self._thread.start()
        self._pipe.write(data)
        return self._collect(final=False)

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
