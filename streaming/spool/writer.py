"""Writing the spool: group-committed appends, atomic sealing, crash recovery.

See :mod:`streaming.spool` for the layout. One writer holds a spool directory (an exclusive
``flock`` on ``writer.lock``); it is the only process that creates segments there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from streaming.spool.format import (
    LANDED_DIR,
    LOCK_FILE,
    OPEN_SUFFIX,
    QUARANTINE_DIR,
    SEALED_SUFFIX,
    SPOOL_SCHEMA,
    Segment,
    SpoolLocked,
    SpoolRecord,
    batches_until_torn,
    fsync_dir,
    parse_id,
    records_to_batch,
    segment_name,
    spool_folders,
)

log = logging.getLogger("sonolake.spool")

LOCK_WAIT_S = 2.0
"""How long a starting writer waits for the directory's lock, in seconds: the sidecar holds it
for the few milliseconds it takes to seal a gone writer's open segment
(:func:`recover_abandoned`); a live writer holds it for good, and is refused after this."""
LOCK_POLL_S = 0.02

WriteDone = Callable[[BaseException | None], None]
"""Told once a submission's group commit is over: None when fsync'd, else the error."""


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the awaiting caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _existing_ids(spool_dir: Path) -> Iterator[int]:
    for folder in (spool_dir, spool_dir / LANDED_DIR, spool_dir / QUARANTINE_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            for suffix in (OPEN_SUFFIX, SEALED_SUFFIX):
                segment_id = parse_id(path.name, suffix)
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


def recover_abandoned(spool_dir: Path) -> list[Segment]:
    """Seal the open segments of every writer folder of the spool whose writer is gone.

    A writer seals what its predecessor left when it starts (:meth:`SpoolWriter.start`). A
    folder no writer starts in again — a gateway restarted with fewer ``--workers``, or not
    restarted at all, or one still starting — would keep acknowledged records in an open
    segment no batch ever lands. The sidecar calls this before planning each batch: a folder
    whose writer lock it can take has no live writer (the lock is released when a process
    dies, however it dies), and its open segments are recovered under that lock exactly as
    the next writer would. A folder whose lock is held is left alone. Returns what was sealed.
    """
    sealed: list[Segment] = []
    for _, folder in spool_folders(spool_dir):
        lock = folder / LOCK_FILE
        if not lock.exists() or not any(folder.glob(f"*{OPEN_SUFFIX}")):
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            try:
                _lock_within(fd, 0)
            except BlockingIOError:
                continue  # its writer is alive and owns the open segment
            try:
                sealed += recover_open_segments(folder)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return sealed


def _lock_within(fd: int, wait_s: float) -> None:
    """Take ``fd``'s exclusive flock, polling for up to ``wait_s`` seconds (0: one try);
    BlockingIOError if it is still held then (a blocking flock could wait forever on a live
    writer)."""
    retry(
        retry=retry_if_exception_type(BlockingIOError),
        stop=stop_after_delay(wait_s),
        wait=wait_fixed(LOCK_POLL_S),
        reraise=True,
    )(fcntl.flock)(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def recover_open_segment(path: Path) -> Segment | None:
    """Seal one ``*.open`` segment from its complete record batches (None if it had none)."""
    segment_id = parse_id(path.name, OPEN_SUFFIX)
    if segment_id is None:
        raise ValueError(f"{path} is not an open spool segment")
    batches, _reason = batches_until_torn(pa.py_buffer(path.read_bytes()))
    target = path.parent / segment_name(segment_id)
    result = None
    if batches:
        rewrite = path.with_name(path.name + ".recover")
        with open(rewrite, "wb") as out:
            # A crashed writer of an older format is recovered in its own format.
            with pa.ipc.new_stream(out, batches[0].schema) as writer:
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
        self._pending: list[tuple[list[SpoolRecord], WriteDone]] = []
        """Submissions waiting for the next group commit: (records, who to tell)."""
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
            _lock_within(fd, LOCK_WAIT_S)
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
        await self.append_many([record])

    async def append_many(self, records: list[SpoolRecord]) -> None:
        """Return once every record is fsync'd, in order, in one group commit (or raise)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submit(records, functools.partial(_settle, future))
        await future

    def submit(self, records: list[SpoolRecord], done: WriteDone) -> None:
        """Queue records for the next group commit without waiting: the hot path's hand-off.

        ``done(None)`` is called on the event loop once all of them are fsync'd, or
        ``done(error)`` when their group failed (none of them then counts as stored). The
        records of one submission are written together and in order, and submissions in the
        order they came: no task or future per record, one callback per submission.
        """
        if self._task is None or self._closing:
            raise RuntimeError("SpoolWriter is not running; call `await writer.start()` first")
        self._pending.append((records, done))
        assert self._wakeup is not None
        self._wakeup.set()

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
            group, records = self._take_group()
            error: Exception | None = None
            try:
                await loop.run_in_executor(self._io, self._write_io, records)
            except Exception as exc:  # every submitter in the group learns the write failed
                error = exc
            for _, done in group:
                try:
                    done(error)
                except Exception:  # one caller's bookkeeping must not stop the spool
                    log.exception("a spool write callback failed")

    def _take_group(self) -> tuple[list[tuple[list[SpoolRecord], WriteDone]], list[SpoolRecord]]:
        """Whole submissions, oldest first, up to ``max_group_records`` (at least one)."""
        count, records = 0, list[SpoolRecord]()
        for records_of, _ in self._pending:
            if records and len(records) + len(records_of) > self.max_group_records:
                break
            records.extend(records_of)
            count += 1
        group = self._pending[:count]
        del self._pending[:count]
        return group, records

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
        segment_id = parse_id(segment.path.name, OPEN_SUFFIX)
        assert segment_id is not None
        segment.seal(self.spool_dir / segment_name(segment_id))
        self.stats.segments_sealed += 1
