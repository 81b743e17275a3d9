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
(:attr:`StreamDecoder.header`, found by :func:`~streaming.gateway.containers.header_length`);
:meth:`StreamDecoder.resuming` primes a new decoder with it and then skips the resumed bytes
to the first unit that starts in them (an Ogg page, a FLAC frame, a WebM block, a whole sample
frame of WAV), since a resumed chunk begins wherever the client cut the stream. Nothing else
is carried: Opus and FLAC units decode from the header alone (an Opus decoder settles within
its first packet).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import av
import av.error
import numpy as np

from streaming.gateway.containers import (
    MATROSKA_CLUSTER,
    MATROSKA_RESUMED_CLUSTER,
    MAX_HEADER_BYTES,
    MAX_RESYNC_BYTES,
    DecodeError,
    header_length,
    parse_wav_header,
    sniff_container,
    unit_start,
)

__all__ = ["DecodeError", "StreamDecoder", "encode_stream", "open_decoder", "parse_wav_header"]

CONTAINERS_FOR_ENCODING = {"opus": ("ogg", "matroska"), "flac": ("flac",)}
"""The containers each compressed ``encoding`` may come in, told apart by the first bytes."""
FEED_TIMEOUT_S = 5.0
"""Longest wait for the decoder thread on one frame before the stream is declared broken."""
_READ_BLOCK = 4096
"""Bytes FFmpeg asks for per read (its I/O buffer); a read returns whatever is buffered."""


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
        if self.container == "matroska" and not resumed.startswith(MATROSKA_CLUSTER):
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
