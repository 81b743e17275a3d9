"""Erasure in the spool: the lock an erasure and the sidecar share, and the per-device purge.

The lock (``<spool>/erasure.lock``, an exclusive ``flock``) is held by the sidecar for one whole
batch (plan, pipeline, commit, retire) and by an erasure from its first delete to its audit
row. So a batch either lands before an erasure (whose deletes then remove its rows) or after
it (and drops the erased device's rows by the audit table's tombstones); no batch rewrites a
segment the purge is rewriting.

The purge rewrites every sealed and landed segment that holds the device without its records
(write a temporary file, fsync, rename over the segment), and deletes quarantined segments
whose bytes contain the device id (they cannot be parsed, so they cannot be filtered), and the
saved stream headers of the device's compressed sessions (``priming/``). The
segment the gateway is still writing (``*.open``) cannot be rewritten: its records are dropped
by the sidecar's tombstone check when it lands, and the file goes with the spool's retention.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas import Lake
from lake_schemas.erasure import ErasureResult, erase_device, plan_erasure
from streaming.spool.format import (
    LANDED_DIR,
    QUARANTINE_DIR,
    SEALED_SUFFIX,
    fsync_dir,
    spool_folders,
)
from streaming.spool.priming import purge_device_priming

ERASURE_LOCK_FILE = "erasure.lock"


@contextmanager
def erasure_lock(spool_dir: Path) -> Iterator[None]:
    """Hold the spool's erasure lock (blocks while another holder has it)."""
    spool_dir = Path(spool_dir)
    spool_dir.mkdir(parents=True, exist_ok=True)
    with open(spool_dir / ERASURE_LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class SpoolPurge:
    """What a purge found and removed."""

    records: int
    """Records of the device removed from sealed and landed segments."""
    segments_rewritten: int
    quarantined_deleted: int
    primings_deleted: int = 0
    """Saved stream headers of the device's compressed sessions (:mod:`streaming.spool.priming`)."""


def _segments(spool_dir: Path) -> list[Path]:
    folders = [
        path for _, writer in spool_folders(spool_dir) for path in (writer, writer / LANDED_DIR)
    ]
    return sorted(
        p for folder in folders if folder.is_dir() for p in folder.glob(f"*{SEALED_SUFFIX}")
    )


def _records_of(path: Path, device_id: str) -> tuple[pa.Table, int] | None:
    """The segment without the device's records and how many those were (None: unreadable)."""
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError):
        return None
    if "device_id" not in table.column_names:
        return table, 0
    mine = pc.equal(pc.cast(table.column("device_id"), pa.string()), device_id)
    count = int(pc.sum(mine).as_py() or 0)
    return (table.filter(pc.invert(mine)) if count else table), count


def _rewrite(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + ".erasing")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    stat = path.stat()
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # keep the retention clock
    tmp.replace(path)
    fsync_dir(path.parent)


def count_device_records(spool_dir: Path, device_id: str) -> int:
    """Records of the device in sealed and landed segments (the dry run)."""
    total = 0
    for path in _segments(Path(spool_dir)):
        found = _records_of(path, device_id)
        total += found[1] if found is not None else 0
    return total


def purge_device(spool_dir: Path, device_id: str) -> SpoolPurge:
    """Remove the device's records from the spool; call it under :func:`erasure_lock`."""
    spool_dir = Path(spool_dir)
    records = rewritten = 0
    for path in _segments(spool_dir):
        found = _records_of(path, device_id)
        if found is None or found[1] == 0:
            continue
        _rewrite(path, found[0])
        records += found[1]
        rewritten += 1
    deleted = 0
    needle = device_id.encode()
    for _, writer in spool_folders(spool_dir):
        quarantine = writer / QUARANTINE_DIR
        if not quarantine.is_dir():
            continue
        for path in sorted(p for p in quarantine.iterdir() if p.is_file()):
            if needle in path.read_bytes():
                path.unlink()
                deleted += 1
    return SpoolPurge(records, rewritten, deleted, purge_device_priming(spool_dir, device_id))


def erase_everywhere(
    lake: Lake, spool_dir: Path, device_id: str, *, requested_by: str
) -> tuple[ErasureResult, SpoolPurge]:
    """Erase a device from the lake and the spool under the erasure lock, audited once.

    The plan is made inside the lock, so rows a batch landed while the caller waited are
    counted and removed too.
    """
    with erasure_lock(spool_dir):
        plan = plan_erasure(lake, device_id)
        purge = purge_device(spool_dir, device_id)
        result = erase_device(
            lake,
            device_id,
            requested_by=requested_by,
            plan=plan,
            spool_records_removed=purge.records,
        )
    return result, purge
