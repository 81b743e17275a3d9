"""The durable spool: the broker between the gateway and the sidecar.

The gateway acknowledges a chunk to its client only once the chunk is on disk, so the spool
is where "accepted" becomes a promise. Records are appended to Arrow IPC *stream* files
(segments) under one directory:

``<id>.arrow.open``
    the one segment being written; a crash can leave it behind with a torn tail.
``<id>.arrow``
    a sealed segment: complete, fsync'd, ending with the IPC end-of-stream marker. Only sealed
    segments are visible to readers (:func:`sealed_segments`).
``landed/<id>.arrow``
    a segment the sidecar has landed in the lake, kept for a retention period.
``quarantine/<id>.arrow``
    a segment the sidecar could not read (its reason is in bronze.dead_letters).

Segment ids are microsecond timestamps made strictly increasing, so names sort in write order
even after every older segment has been retired.

Why the shape: many sessions append concurrently, and one ``fsync`` costs ~1–10 ms. The writer
therefore *group-commits*: every ``append`` made while the previous write is in flight (or
within ``commit_interval_ms``) joins one Arrow record batch, written and fsync'd once, and all
of their awaits resolve together. File I/O runs on one dedicated thread, never on the event
loop. Sealing is atomic (write ``*.open``, fsync, rename, fsync the directory), so a reader
never sees a half-written sealed segment; on start the writer recovers an ``*.open`` segment
left by a crash, keeping every complete record batch (every acknowledged record) and dropping a
torn tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import pyarrow as pa

TIMESTAMP_US_UTC = pa.timestamp("us", tz="UTC")

SPOOL_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_time", TIMESTAMP_US_UTC, nullable=False),
        pa.field("received_at", TIMESTAMP_US_UTC, nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("encoding", pa.string(), nullable=False),
        pa.field("pcm", pa.binary(), nullable=False),
        pa.field("label", pa.string(), nullable=True),
        pa.field("meta_json", pa.string(), nullable=True),
    ]
)
"""One schema for every spool record: a chunk of audio, or the end of a session."""

KIND_CHUNK: Literal["chunk"] = "chunk"
KIND_SESSION_END: Literal["session_end"] = "session_end"
SESSION_END_SEQ = -1
"""``seq`` of a ``session_end`` record (it is not a chunk)."""

SEALED_SUFFIX = ".arrow"
OPEN_SUFFIX = ".arrow.open"
LANDED_DIR = "landed"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = "writer.lock"
_ID_DIGITS = 20
_IPC_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
"""The Arrow IPC end-of-stream marker (continuation token, zero length) a sealed file ends with."""


class SpoolCorrupt(ValueError):
    """A segment cannot be read as a complete spool segment (the reason is in the message)."""


class SpoolLocked(RuntimeError):
    """Another writer holds the spool directory."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spool record; see :data:`SPOOL_SCHEMA` for the meaning of each field."""

    kind: Literal["chunk", "session_end"]
    session_id: str
    device_id: str
    seq: int
    event_time: datetime
    """UTC capture time of the chunk's first sample (session_end: when the session ended)."""
    received_at: datetime
    """UTC time the gateway received the chunk."""
    sample_rate: int
    """Hz, as negotiated for the session (8000–48000)."""
    encoding: str
    """``linear16`` or ``mulaw``."""
    pcm: bytes
    """Audio bytes exactly as received (empty for session_end)."""
    label: str | None = None
    meta_json: str | None = None
    """session_end: JSON totals (chunks, dropped_chunks, interim/final results, …)."""

    @classmethod
    def chunk(
        cls,
        *,
        session_id: str,
        device_id: str,
        seq: int,
        event_time: datetime,
        sample_rate: int,
        encoding: str,
        pcm: bytes,
        label: str | None = None,
        received_at: datetime | None = None,
    ) -> SpoolRecord:
        return cls(
            KIND_CHUNK,
            session_id,
            device_id,
            seq,
            event_time,
            received_at or datetime.now(UTC),
            sample_rate,
            encoding,
            pcm,
            label,
            None,
        )

    @classmethod
    def session_end(
        cls,
        *,
        session_id: str,
        device_id: str,
        event_time: datetime,
        sample_rate: int,
        encoding: str,
        meta_json: str,
        received_at: datetime | None = None,
    ) -> SpoolRecord:
        return cls(
            KIND_SESSION_END,
            session_id,
            device_id,
            SESSION_END_SEQ,
            event_time,
            received_at or datetime.now(UTC),
            sample_rate,
            encoding,
            b"",
            None,
            meta_json,
        )


def records_to_batch(records: Iterable[SpoolRecord]) -> pa.RecordBatch:
    """Spool records → one Arrow record batch with :data:`SPOOL_SCHEMA` (column-wise build)."""
    rows = list(records)
    columns = {name: [getattr(r, name) for r in rows] for name in SPOOL_SCHEMA.names}
    return pa.RecordBatch.from_pydict(columns, schema=SPOOL_SCHEMA)


@dataclass(frozen=True, slots=True)
class Segment:
    """A sealed segment file and its place in the spool's order."""

    segment_id: int
    path: Path
    size_bytes: int

    @property
    def name(self) -> str:
        return self.path.name


def segment_name(segment_id: int, *, sealed: bool = True) -> str:
    return f"{segment_id:0{_ID_DIGITS}d}{SEALED_SUFFIX if sealed else OPEN_SUFFIX}"


def _parse_id(name: str, suffix: str) -> int | None:
    if not name.endswith(suffix):
        return None
    stem = name[: -len(suffix)]
    return int(stem) if stem.isdigit() else None


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sealed_segments(spool_dir: Path) -> list[Segment]:
    """Sealed, not yet retired segments, oldest first. Open segments are never listed."""
    spool_dir = Path(spool_dir)
    if not spool_dir.is_dir():
        return []
    found: list[Segment] = []
    with os.scandir(spool_dir) as entries:
        for entry in entries:
            segment_id = _parse_id(entry.name, SEALED_SUFFIX)
            if segment_id is not None and entry.is_file():
                found.append(Segment(segment_id, Path(entry.path), entry.stat().st_size))
    return sorted(found, key=lambda s: s.segment_id)


def _batches_until_torn(data: pa.Buffer) -> tuple[list[pa.RecordBatch], str | None]:
    """Every complete record batch of an IPC stream and, if it stops early, why."""
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        return batches, f"no readable schema: {exc}"
    if not reader.schema.equals(SPOOL_SCHEMA):
        return batches, f"schema is not the spool schema: {reader.schema}"
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return batches, None
        except (pa.ArrowInvalid, OSError) as exc:
            return batches, f"torn record batch: {exc}"
        try:
            batch.validate(full=True)
        except pa.ArrowInvalid as exc:
            return batches, f"invalid record batch: {exc}"
        batches.append(batch)


def read_segment(path: Path) -> pa.Table:
    """A sealed segment's records; :class:`SpoolCorrupt` says why a segment cannot be trusted.

    A sealed segment must carry the spool schema and end with the end-of-stream marker, so a
    file truncated even at a batch boundary is refused rather than half-landed.
    """
    data = Path(path).read_bytes()
    return decode_segment(data, source=str(path))


def decode_segment(data: bytes, *, source: str = "<bytes>") -> pa.Table:
    """The records of a sealed segment's bytes (from a file, an object store or a message)."""
    if len(data) == 0:
        raise SpoolCorrupt(f"{source}: empty segment file")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        schema = reader.schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpoolCorrupt(f"{source}: not an Arrow IPC stream ({exc})") from None
    if not schema.equals(SPOOL_SCHEMA):
        raise SpoolCorrupt(f"{source}: schema is not the spool schema: {schema}")
    if not data.endswith(_IPC_EOS):
        raise SpoolCorrupt(f"{source}: truncated (no end-of-stream marker)")
    try:
        table = reader.read_all()
        table.validate(full=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpoolCorrupt(f"{source}: unreadable record batch ({exc})") from None
    return table


def retire_segment(segment: Segment | Path, *, retention_s: float = 0.0) -> None:
    """Take a landed segment out of the sealed list.

    With ``retention_s`` > 0 it moves to ``landed/`` (deleted later by :func:`purge_landed`),
    otherwise it is deleted. Idempotent: retiring a segment that is already gone does nothing,
    so a driver that crashed half-way through retiring can simply retire again.
    """
    path = segment.path if isinstance(segment, Segment) else Path(segment)
    spool_dir = path.parent
    if not path.exists():
        return
    if retention_s > 0:
        landed = spool_dir / LANDED_DIR
        landed.mkdir(exist_ok=True)
        os.utime(path)  # the retention clock starts when the segment is landed
        os.replace(path, landed / path.name)
        fsync_dir(landed)
    else:
        path.unlink(missing_ok=True)
    fsync_dir(spool_dir)


def quarantine_segment(segment: Segment | Path) -> Path | None:
    """Move a segment the sidecar could not read to ``quarantine/`` (kept until an operator
    looks at it); returns its new path, None when it is already gone."""
    path = segment.path if isinstance(segment, Segment) else Path(segment)
    if not path.exists():
        return None
    folder = path.parent / QUARANTINE_DIR
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    os.replace(path, target)
    fsync_dir(folder)
    fsync_dir(path.parent)
    return target


def purge_landed(spool_dir: Path, retention_s: float, *, now_s: float | None = None) -> int:
    """Delete landed segments older than ``retention_s`` seconds; returns how many."""
    landed = Path(spool_dir) / LANDED_DIR
    if not landed.is_dir():
        return 0
    cutoff = (time.time() if now_s is None else now_s) - retention_s
    removed = 0
    for path in landed.iterdir():
        if path.name.endswith(SEALED_SUFFIX) and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        fsync_dir(landed)
    return removed


def _existing_ids(spool_dir: Path) -> Iterator[int]:
    for folder in (spool_dir, spool_dir / LANDED_DIR, spool_dir / QUARANTINE_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            for suffix in (OPEN_SUFFIX, SEALED_SUFFIX):
                segment_id = _parse_id(path.name, suffix)
                if segment_id is not None:
                    yield segment_id
                    break


def recover_open_segments(spool_dir: Path) -> list[Segment]:
    """Seal every ``*.open`` segment a crashed writer left: keep complete batches, drop the tail.

    Every acknowledged record was fsync'd as a complete record batch, so it survives; a batch
    that was being written when the writer died was never acknowledged and may be dropped.
    Returns the segments sealed (an open segment with no complete batch is simply removed).
    """
    spool_dir = Path(spool_dir)
    sealed: list[Segment] = []
    for path in sorted(spool_dir.glob(f"*{OPEN_SUFFIX}")):
        segment = recover_open_segment(path)
        if segment is not None:
            sealed.append(segment)
    return sealed


def recover_open_segment(path: Path) -> Segment | None:
    """Seal one ``*.open`` segment from its complete record batches (None if it had none)."""
    segment_id = _parse_id(path.name, OPEN_SUFFIX)
    if segment_id is None:
        raise ValueError(f"{path} is not an open spool segment")
    batches, _reason = _batches_until_torn(pa.py_buffer(path.read_bytes()))
    target = path.parent / segment_name(segment_id)
    result = None
    if batches:
        rewrite = path.with_name(path.name + ".recover")
        with open(rewrite, "wb") as out:
            with pa.ipc.new_stream(out, SPOOL_SCHEMA) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            out.flush()
            os.fsync(out.fileno())
        os.replace(rewrite, target)
        result = Segment(segment_id, target, target.stat().st_size)
    path.unlink()
    fsync_dir(path.parent)
    return result


@dataclass
class SpoolStats:
    """Counters a gateway can export as metrics."""

    records: int = 0
    bytes_written: int = 0
    group_commits: int = 0
    segments_sealed: int = 0
    recovered_segments: int = 0


class _OpenSegment:
    """The segment being written; only ever touched from the writer's I/O thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in seal()
        self.writer = pa.ipc.new_stream(self.file, SPOOL_SCHEMA)
        self.created_s = time.monotonic()
        self.records = 0

    @property
    def size_bytes(self) -> int:
        return self.file.tell()

    def write(self, batch: pa.RecordBatch) -> int:
        before = self.file.tell()
        self.writer.write_batch(batch)
        self.file.flush()
        os.fdatasync(self.file.fileno())
        self.records += batch.num_rows
        return self.file.tell() - before

    def seal(self, target: Path) -> None:
        self.writer.close()  # writes the end-of-stream marker
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.path, target)
        fsync_dir(target.parent)


class SpoolWriter:
    """Append spool records durably, many concurrent appends per fsync (group commit).

    ``max_segment_bytes`` and ``max_segment_age_s`` bound a segment (so the sidecar sees data
    within about ``max_segment_age_s`` seconds); ``commit_interval_ms`` is how long the first
    record of a group may wait for company before the group is written (0: write as soon as the
    previous write is done, which still groups everything that arrived meanwhile).
    """

    def __init__(
        self,
        spool_dir: Path,
        *,
        max_segment_bytes: int = 64 * 1024 * 1024,
        max_segment_age_s: float = 1.0,
        commit_interval_ms: float = 2.0,
        max_group_records: int = 4096,
    ) -> None:
        if max_segment_bytes <= 0 or max_segment_age_s <= 0:
            raise ValueError("max_segment_bytes and max_segment_age_s must be positive")
        if commit_interval_ms < 0:
            raise ValueError("commit_interval_ms must be >= 0")
        self.spool_dir = Path(spool_dir)
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_age_s = max_segment_age_s
        self.commit_interval_s = commit_interval_ms / 1000.0
        self.max_group_records = max_group_records
        self.stats = SpoolStats()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-io")
        self._pending: list[tuple[SpoolRecord, asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._segment: _OpenSegment | None = None
        self._last_id = 0
        self._lock_fd: int | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Lock the directory, recover a crashed writer's open segment, start committing."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._start_io)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._commit_loop(), name="spool-group-commit")

    def _start_io(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.spool_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(
                f"another spool writer is using {self.spool_dir}; stop it or use another spool_dir"
            ) from None
        self._lock_fd = fd
        self.stats.recovered_segments = len(recover_open_segments(self.spool_dir))
        self._last_id = max(_existing_ids(self.spool_dir), default=0)

    async def close(self) -> None:
        """Write what is pending, seal the open segment and release the directory."""
        if self._task is None:
            return
        self._closing = True
        assert self._wakeup is not None
        self._wakeup.set()
        await self._task
        self._task = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._close_io)
        self._io.shutdown(wait=True)

    def _close_io(self) -> None:
        self._seal_io()
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> SpoolWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- appending -------------------------------------------------------------------------
    async def append(self, record: SpoolRecord) -> None:
        """Return once ``record`` is fsync'd in a segment (raises if the write failed)."""
        if self._task is None or self._closing:
            raise RuntimeError("SpoolWriter is not running; call `await writer.start()` first")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        assert self._wakeup is not None
        self._wakeup.set()
        await future

    async def seal(self) -> None:
        """Seal the open segment now (e.g. before a planned shutdown or in tests)."""
        await asyncio.get_running_loop().run_in_executor(self._io, self._seal_io)

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                timeout = self._age_deadline_s()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    await loop.run_in_executor(self._io, self._seal_if_old_io)
                    continue
                if not self._pending:
                    continue
            if self.commit_interval_s > 0 and not self._closing:
                # Give concurrent appends a moment to join this group.
                await asyncio.sleep(self.commit_interval_s)
            group = self._pending[: self.max_group_records]
            del self._pending[: len(group)]
            try:
                await loop.run_in_executor(self._io, self._write_io, [r for r, _ in group])
            except Exception as exc:  # every waiter in the group learns the write failed
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)

    def _age_deadline_s(self) -> float | None:
        segment = self._segment
        if segment is None:
            return None
        return max(0.0, segment.created_s + self.max_segment_age_s - time.monotonic())

    # -- I/O thread ------------------------------------------------------------------------
    def _next_id(self) -> int:
        self._last_id = max(time.time_ns() // 1000, self._last_id + 1)
        return self._last_id

    def _write_io(self, records: list[SpoolRecord]) -> None:
        batch = records_to_batch(records)
        self._seal_if_old_io()
        if self._segment is None:
            path = self.spool_dir / segment_name(self._next_id(), sealed=False)
            self._segment = _OpenSegment(path)
            fsync_dir(self.spool_dir)  # the open file's name must survive a crash too
        try:
            written = self._segment.write(batch)
        except BaseException:
            # The batch may be half-written: seal what was complete and start afresh, so the
            # failed group is never acknowledged and the earlier records stay readable.
            broken, self._segment = self._segment, None
            with contextlib.suppress(OSError):
                broken.file.close()
            with contextlib.suppress(OSError, ValueError):
                recover_open_segment(broken.path)
            raise
        self.stats.bytes_written += written
        self.stats.records += batch.num_rows
        self.stats.group_commits += 1
        if self._segment.size_bytes >= self.max_segment_bytes:
            self._seal_io()

    def _seal_if_old_io(self) -> None:
        segment = self._segment
        if segment is not None and time.monotonic() - segment.created_s >= self.max_segment_age_s:
            self._seal_io()

    def _seal_io(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        segment_id = _parse_id(segment.path.name, OPEN_SUFFIX)
        assert segment_id is not None
        segment.seal(self.spool_dir / segment_name(segment_id))
        self.stats.segments_sealed += 1


def spool_lag_s(spool_dir: Path) -> float:
    """Age in seconds of the oldest sealed segment not yet landed (0 when none): sidecar lag."""
    segments = sealed_segments(spool_dir)
    if not segments:
        return 0.0
    with contextlib.suppress(FileNotFoundError):
        return max(0.0, time.time() - segments[0].path.stat().st_mtime)
    return 0.0
