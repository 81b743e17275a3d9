"""Reading the spool: which sealed segments wait, their records, and retiring them.

The sidecar is the spool's one reader. It lists sealed segments oldest first, reads each whole
(a segment is only trusted once it ends with the end-of-stream marker), and after a batch has
landed retires its segments to ``landed/`` (kept for a retention period) or quarantines the
ones it could not read.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pyarrow as pa

from streaming.spool.format import (
    LANDED_DIR,
    QUARANTINE_DIR,
    SEALED_SUFFIX,
    Segment,
    decode_segment,
    fsync_dir,
    parse_id,
    spool_folders,
)


def sealed_segments(spool_dir: Path) -> list[Segment]:
    """Sealed, not yet retired segments of every writer's folder (the spool and each
    ``worker-K/``), oldest first by id (a microsecond timestamp). Open ones are never listed.
    """
    found: list[Segment] = []
    for folder_name, folder in spool_folders(spool_dir):
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                segment_id = parse_id(entry.name, SEALED_SUFFIX)
                if segment_id is not None and entry.is_file():
                    found.append(
                        Segment(segment_id, Path(entry.path), entry.stat().st_size, folder_name)
                    )
    return sorted(found, key=lambda s: (s.segment_id, s.folder))


def read_segment(path: Path) -> pa.Table:
    """A sealed segment's records; :class:`SpoolCorrupt` says why a segment cannot be trusted.

    A sealed segment must carry the spool schema and end with the end-of-stream marker, so a
    file truncated even at a batch boundary is refused rather than half-landed.
    """
    data = Path(path).read_bytes()
    return decode_segment(data, source=str(path))


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
    """Delete landed segments older than ``retention_s`` seconds (every writer's folder);
    returns how many."""
    cutoff = (time.time() if now_s is None else now_s) - retention_s
    removed = 0
    for _, folder in spool_folders(spool_dir):
        landed = folder / LANDED_DIR
        if not landed.is_dir():
            continue
        gone = 0
        for path in landed.iterdir():
            if path.name.endswith(SEALED_SUFFIX) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                gone += 1
        if gone:
            fsync_dir(landed)
        removed += gone
    return removed


def spool_lag_s(spool_dir: Path) -> float:
    """Age in seconds of the oldest sealed segment not yet landed (0 when none): sidecar lag."""
    segments = sealed_segments(spool_dir)
    if not segments:
        return 0.0
    with contextlib.suppress(FileNotFoundError):
        return max(0.0, time.time() - segments[0].path.stat().st_mtime)
    return 0.0
