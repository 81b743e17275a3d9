"""The host's session registry: what a resume needs, shared by every gateway process.

A session outlives the process that opened it: after a crash, a restart or a resume that lands
on another worker, the new process finds the session here — who opened it (the credential's
digest), the digest of its resume secret (never the secret, never the token), its device and
audio format, and how far it is durable (``durable_seq``, written when the spool's group commit
has fsync'd, before the Ack goes out) — and continues the same session id.

It is one SQLite file in WAL mode beside the spool (``<spool>/sessions.db``): readers never
block the writer, and every worker on the host opens the same file. Writes are group
commits too: every durable mark noted while the previous write runs goes into one
transaction, on the registry's own thread, so the hot path pays one SQLite commit per group,
not per chunk. ``synchronous=NORMAL``: a commit survives the death of any process (SIGKILL);
after a power loss the registry may lag the spool by its last commits, which only means a
resume re-sends chunks that the sidecar then recognises as duplicates.

Ownership: each row names the worker that serves the session (``owner``) and how often it
changed hands (``epoch``). A resume that another worker accepts moves the row to it; the
previous owner learns at its next :meth:`SessionRegistry.heartbeat` that the session left and
drops it without ending it. Expiry is bounded: a row whose ``last_seen`` is older than the
resume window cannot be resumed, and the reaper of any worker ends it (:meth:`expire`).
Times are Unix seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTRY_FILE = "sessions.db"
"""The registry's file name in the spool folder (never a segment: no ``.arrow`` suffix)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    credential TEXT NOT NULL,
    resume_digest TEXT NOT NULL,
    device_id TEXT NOT NULL,
    encoding TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    durable_seq INTEGER NOT NULL,
    utterances INTEGER NOT NULL,
    results INTEGER NOT NULL,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_live ON sessions (ended, last_seen);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, ended);
"""
_COLUMNS = (
    "session_id, credential, resume_digest, device_id, encoding, sample_rate, created_at, "
    "last_seen, durable_seq, utterances, results, owner, epoch"
)
ENDED_RETENTION_S = 3600.0
"""Ended rows are deleted after this long (they only answer "refused" meanwhile)."""


@dataclass(frozen=True)
class SessionRow:
    """One session as the registry knows it."""

    session_id: str
    credential: str
    resume_digest: str
    device_id: str
    encoding: str
    sample_rate: int
    created_at: float
    last_seen: float
    durable_seq: int
    """Highest seq such that it and every seq before it are fsync'd in some worker's spool."""
    utterances: int
    """Utterances opened so far: a new owner numbers the next one after it (no id reuse)."""
    results: int
    """Results spooled so far: the next owner's result numbers follow (prediction ids)."""
    owner: str
    epoch: int

    def astuple(self) -> tuple[Any, ...]:
        return (
            self.session_id,
            self.credential,
            self.resume_digest,
            self.device_id,
            self.encoding,
            self.sample_rate,
            self.created_at,
            self.last_seen,
            self.durable_seq,
            self.utterances,
            self.results,
            self.owner,
            self.epoch,
        )


@dataclass(frozen=True)
class Durable:
    """A durable mark to write: the session's watermark and utterance count, and when."""

    durable_seq: int
    utterances: int
    results: int
    at: float


WAL_CHECKPOINT_PAGES = 16
"""Pages (4 KiB) the registry's write-ahead log may hold before it is checkpointed."""


class SessionRegistry:
    """The registry file, opened by one worker (``owner`` names it in the rows it holds).

    All SQLite work runs on one thread per process; the async methods never block the loop.
    """

    def __init__(self, path: Path, owner: str) -> None:
        self.path = Path(path)
        self.owner = owner
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-registry")
        self._db: sqlite3.Connection | None = None
        self._marks: dict[str, Durable] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        await self._run(self._open_io)

    def _open_io(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The registry holds a few hundred small rows but is written on every group commit:
        # checkpoint the WAL every 16 pages (64 KiB) and truncate it back to that size, so it
        # never grows to SQLite's default of 4 MiB beside a spool that may be short of room.
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        db.executescript(_SCHEMA)
        self._db = db

    async def close(self) -> None:
        await self._run(self._close_io)
        self._io.shutdown(wait=True)

    def _close_io(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _tx(self) -> sqlite3.Connection:
        assert self._db is not None, "SessionRegistry.open() first"
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the file's write lock at once,
        so two workers never deadlock upgrading read locks)."""
        db = self._tx()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ---- sessions ----------------------------------------------------------------------
    async def register(self, row: SessionRow) -> None:
        """A new session, owned by this worker."""
        await self._run(self._register_io, row)

    def _register_io(self, row: SessionRow) -> None:
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO sessions ({_COLUMNS}) VALUES ({','.join('?' * 13)})",
                row.astuple(),
            )

    async def find(self, session_id: str, *, live_since: float) -> SessionRow | None:
        """The session if it has not ended and was seen at or after ``live_since``."""
        return await self._run(self._find_io, session_id, live_since)

    def _find_io(self, session_id: str, live_since: float) -> SessionRow | None:
        found = (
            self._tx()
            .execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE session_id=? AND ended=0 AND last_seen>=?",
                (session_id, live_since),
            )
            .fetchone()
        )
        return SessionRow(*found) if found else None

    async def claim(self, row: SessionRow, now: float) -> SessionRow | None:
        """Move the session to this worker (a checked resume); None if it changed meanwhile.

        The update only applies to the row as it was read (same owner and epoch, not
        ended), so two workers accepting resumes of one session at once cannot both win.
        """
        return await self._run(self._claim_io, row, now)

    def _claim_io(self, row: SessionRow, now: float) -> SessionRow | None:
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE sessions SET owner=?, epoch=epoch+1, last_seen=? "
                "WHERE session_id=? AND owner=? AND epoch=? AND ended=0",
                (self.owner, now, row.session_id, row.owner, row.epoch),
            ).rowcount
            if not changed:
                return None
            found = db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE session_id=?", (row.session_id,)
            ).fetchone()
        return SessionRow(*found)

    async def owns(self, session_id: str, epoch: int) -> bool:
        """Whether this worker still serves the session at this epoch (nobody took it)."""
        return await self._run(self._owns_io, session_id, epoch)

    def _owns_io(self, session_id: str, epoch: int) -> bool:
        found = (
            self._tx()
            .execute(
                "SELECT 1 FROM sessions WHERE session_id=? AND owner=? AND epoch=? AND ended=0",
                (session_id, self.owner, epoch),
            )
            .fetchone()
        )
        return found is not None

    async def end(self, session_id: str, epoch: int) -> bool:
        """Mark the session ended if this worker still holds it; True when it does.

        True as well when another worker's :meth:`expire` marked it ended first: the owner
        still writes the session's end record.
        """
        return await self._run(self._end_io, session_id, epoch)

    def _end_io(self, session_id: str, epoch: int) -> bool:
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE sessions SET ended=1 WHERE session_id=? AND owner=? AND epoch=?",
                (session_id, self.owner, epoch),
            ).rowcount
        return bool(changed)

    # ---- durable marks (group commit) --------------------------------------------------
    async def note_durable(self, session_id: str, mark: Durable) -> None:
        """Record a session's durable watermark; returns once it is committed.

        Marks noted while a commit is running share the next commit (one transaction).
        Only the owner's rows move, and a watermark never moves back.
        """
        previous = self._marks.get(session_id)
        if previous is None or previous.durable_seq <= mark.durable_seq:
            self._marks[session_id] = mark
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        await future

    async def _flush_loop(self) -> None:
        try:
            while self._marks:
                marks, self._marks = self._marks, {}
                waiters, self._waiters = self._waiters, []
                try:
                    await self._run(self._write_marks_io, list(marks.items()))
                except Exception as exc:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                else:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            self._flushing = False

    def _write_marks_io(self, marks: list[tuple[str, Durable]]) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE sessions SET durable_seq=MAX(durable_seq, ?), "
                "utterances=MAX(utterances, ?), results=MAX(results, ?), "
                "last_seen=MAX(last_seen, ?) "
                "WHERE session_id=? AND owner=?",
                [
                    (m.durable_seq, m.utterances, m.results, m.at, sid, self.owner)
                    for sid, m in marks
                ],
            )

    # ---- liveness, quotas, expiry ------------------------------------------------------
    async def heartbeat(self, held: Iterable[tuple[str, int]], now: float) -> set[str]:
        """Refresh ``last_seen`` of the sessions this worker holds (id, epoch) and that are
        still connected; returns the ids among them that another worker has taken over."""
        return await self._run(self._heartbeat_io, list(held), now)

    def _heartbeat_io(self, held: list[tuple[str, int]], now: float) -> set[str]:
        if not held:
            return set()
        lost: set[str] = set()
        with self._transaction() as db:
            for session_id, epoch in held:
                changed = db.execute(
                    "UPDATE sessions SET last_seen=MAX(last_seen, ?) "
                    "WHERE session_id=? AND owner=? AND epoch=? AND ended=0",
                    (now, session_id, self.owner, epoch),
                ).rowcount
                if not changed:
                    lost.add(session_id)
        return lost

    async def live(self, *, live_since: float, credential: str) -> tuple[int, int]:
        """Sessions on the host that are open or still resumable: (all, this credential's)."""
        return await self._run(self._live_io, live_since, credential)

    def _live_io(self, live_since: float, credential: str) -> tuple[int, int]:
        total, mine = (
            self._tx()
            .execute(
                "SELECT COUNT(*), COALESCE(SUM(credential=?), 0) FROM sessions "
                "WHERE ended=0 AND last_seen>=?",
                (credential, live_since),
            )
            .fetchone()
        )
        return int(total), int(mine)

    async def expire(self, *, live_since: float, now: float) -> int:
        """End every session not seen since ``live_since`` (its device did not come back in
        the resume window, whoever held it) and delete long-ended rows; how many ended."""
        return await self._run(self._expire_io, live_since, now)

    def _expire_io(self, live_since: float, now: float) -> int:
        with self._transaction() as db:
            ended = db.execute(
                "UPDATE sessions SET ended=1, last_seen=? WHERE ended=0 AND last_seen<?",
                (now, live_since),
            ).rowcount
            db.execute(
                "DELETE FROM sessions WHERE ended=1 AND last_seen<?", (now - ENDED_RETENTION_S,)
            )
        return int(ended)
