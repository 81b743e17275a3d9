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

Format 2 carries the gateway's *decisions* beside the audio: an
``utterance`` record per closed utterance (stream-clock span, chunk range, speech ratio, end
reason, and the final ``Results`` sent for it), a ``result`` record per interim ``Results``,
and the session's totals in ``session_end``. Format 3 adds, on the chunks of a compressed
stream (Opus, FLAC, a container), the bytes exactly as the client sent them (``received``)
beside the decoded PCM, and the encoding and container they came in; raw PCM streams leave
those null (their ``pcm`` is what was received). Segments of formats 1 and 2 are still read:
:func:`decode_segment` upgrades them with the null columns they never had.

Segment ids are microsecond timestamps made strictly increasing, so names sort in write order
even after every older segment has been retired.

Why the shape: many sessions append concurrently, and one ``fsync`` costs ~1–10 ms. The writer
therefore *group-commits*: every ``append`` / ``append_many`` / ``submit`` made while the
previous write is in flight (or within ``commit_interval_ms``) joins one Arrow record batch,
written and fsync'd once, and all of their awaits (or ``submit`` callbacks: the gateway's hot
path, no future per record) resolve together. File I/O runs on one dedicated thread, never on
the event loop. Sealing is atomic (write ``*.open``, fsync, rename, fsync the directory), so
a reader never sees a half-written sealed segment; on start the writer recovers an ``*.open``
segment left by a crash, keeping every complete record batch (every acknowledged record) and
dropping a torn tail.
"""

from streaming.spool.format import (
    KIND_CHUNK,
    KIND_RESULT,
    KIND_SESSION_END,
    KIND_UTTERANCE,
    KINDS,
    LANDED_DIR,
    OPEN_SUFFIX,
    QUARANTINE_DIR,
    SEALED_SUFFIX,
    SESSION_END_SEQ,
    SPOOL_FORMAT_VERSION,
    SPOOL_SCHEMA,
    SPOOL_SCHEMA_V1,
    SPOOL_SCHEMA_V2,
    TIMESTAMP_US_UTC,
    TOP_K_TYPE,
    WORKER_DIR_PREFIX,
    Segment,
    SpoolCorrupt,
    SpoolLocked,
    SpoolRecord,
    decode_segment,
    fsync_dir,
    records_to_batch,
    segment_name,
    spool_folders,
    upgrade,
    worker_spool_dir,
)
from streaming.spool.reader import (
    purge_landed,
    quarantine_segment,
    read_segment,
    retire_segment,
    sealed_segments,
    spool_lag_s,
)
from streaming.spool.writer import (
    SpoolStats,
    SpoolWriter,
    recover_abandoned,
    recover_open_segment,
    recover_open_segments,
)

__all__ = [
    "KINDS",
    "KIND_CHUNK",
    "KIND_RESULT",
    "KIND_SESSION_END",
    "KIND_UTTERANCE",
    "LANDED_DIR",
    "OPEN_SUFFIX",
    "QUARANTINE_DIR",
    "SEALED_SUFFIX",
    "SESSION_END_SEQ",
    "SPOOL_FORMAT_VERSION",
    "SPOOL_SCHEMA",
    "SPOOL_SCHEMA_V1",
    "SPOOL_SCHEMA_V2",
    "TIMESTAMP_US_UTC",
    "TOP_K_TYPE",
    "WORKER_DIR_PREFIX",
    "Segment",
    "SpoolCorrupt",
    "SpoolLocked",
    "SpoolRecord",
    "SpoolStats",
    "SpoolWriter",
    "decode_segment",
    "fsync_dir",
    "purge_landed",
    "quarantine_segment",
    "read_segment",
    "records_to_batch",
    "recover_abandoned",
    "recover_open_segment",
    "recover_open_segments",
    "retire_segment",
    "sealed_segments",
    "segment_name",
    "spool_folders",
    "spool_lag_s",
    "upgrade",
    "worker_spool_dir",
]
