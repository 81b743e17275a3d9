"""The spool's format: one Arrow schema for every record, segment names and the end marker.

Both sides depend on this module alone: the gateway's writer (:mod:`streaming.spool.writer`)
and the sidecar's reader (:mod:`streaming.spool.reader`). See :mod:`streaming.spool` for the
layout on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from lake_schemas.tables import ROLE_SHADOW

TIMESTAMP_US_UTC = pa.timestamp("us", tz="UTC")

SPOOL_SCHEMA_V1 = pa.schema(
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
"""Format 1: audio chunks and session ends only. Still read (:func:`decode_segment`)."""

TOP_K_TYPE = pa.list_(pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float64())]))
DECISION_FIELDS = [
    pa.field("utterance", pa.int64()),
    pa.field("result_index", pa.int64()),
    pa.field("is_final", pa.bool_()),
    pa.field("speech_final", pa.bool_()),
    pa.field("start_sample", pa.int64()),
    pa.field("end_sample", pa.int64()),
    pa.field("first_seq", pa.int64()),
    pa.field("last_seq", pa.int64()),
    pa.field("speech_ratio", pa.float64()),
    pa.field("end_reason", pa.string()),
    pa.field("predicted_label", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("top_k", TOP_K_TYPE),
    pa.field("model_version", pa.string()),
    pa.field("role", pa.string()),
    pa.field("latency_ms", pa.float64()),
]
"""Format 2 adds the gateway's decisions, null on audio records (see :class:`SpoolRecord`)."""

SPOOL_SCHEMA_V2 = pa.schema([*SPOOL_SCHEMA_V1, *DECISION_FIELDS])
"""Format 2: audio and decisions. Still read (:func:`decode_segment`)."""

RECEIVED_FIELDS = [
    pa.field("received", pa.binary()),
    pa.field("received_encoding", pa.string()),
    pa.field("received_container", pa.string()),
]
"""Format 3 adds the bytes a compressed stream's client sent, null when they are the PCM."""

SPOOL_FORMAT_VERSION = 3
SPOOL_SCHEMA = pa.schema(
    [*SPOOL_SCHEMA_V2, *RECEIVED_FIELDS],
    metadata={b"sonolake.spool_format": str(SPOOL_FORMAT_VERSION).encode()},
)
"""One schema for every spool record: a chunk of audio, a decision, or the end of a session."""

KIND_CHUNK: Literal["chunk"] = "chunk"
KIND_RESULT: Literal["result"] = "result"
"""An interim ``Results`` the gateway sent, or a shadow result (``role`` shadow, final)."""
KIND_UTTERANCE: Literal["utterance"] = "utterance"
"""A closed utterance together with the final ``Results`` the gateway sent for it."""
KIND_SESSION_END: Literal["session_end"] = "session_end"
KINDS = (KIND_CHUNK, KIND_RESULT, KIND_UTTERANCE, KIND_SESSION_END)
SESSION_END_SEQ = -1
"""``seq`` of every record that is not a chunk (session_end, result, utterance)."""
Kind = Literal["chunk", "result", "utterance", "session_end"]

SEALED_SUFFIX = ".arrow"
OPEN_SUFFIX = ".arrow.open"
LANDED_DIR = "landed"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = "writer.lock"
ID_DIGITS = 20
IPC_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
"""The Arrow IPC end-of-stream marker (continuation token, zero length) a sealed file ends with."""


class SpoolCorrupt(ValueError):
    """A segment cannot be read as a complete spool segment (the reason is in the message)."""


class SpoolLocked(RuntimeError):
    """Another writer holds the spool directory."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spool record; see :data:`SPOOL_SCHEMA` for the meaning of each field."""

    kind: Kind
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
    """``linear16`` or ``mulaw``: the encoding of ``pcm``."""
    pcm: bytes
    """The audio the pipeline processes: the bytes as received for ``linear16``/``mulaw``
    streams, the decoded PCM16 of a compressed stream (possibly empty: a frame that completed
    no audio, such as a container header). Empty for records that are not chunks."""
    label: str | None = None
    meta_json: str | None = None
    """session_end: JSON totals (chunks, dropped_chunks, interim/final results, …)."""
    # ---- decisions (result, utterance); null on chunk and session_end records ----------
    utterance: int | None = None
    """The utterance's number within the session (1, 2, …), as in the ``Results`` message."""
    result_index: int | None = None
    """The result's number within the session (0, 1, …): its key in gold.predictions."""
    is_final: bool | None = None
    speech_final: bool | None = None
    start_sample: int | None = None
    """Stream clock (16 kHz samples since the stream's first sample) where the audio starts."""
    end_sample: int | None = None
    first_seq: int | None = None
    """utterance: the first and last chunk the utterance's audio spans."""
    last_seq: int | None = None
    speech_ratio: float | None = None
    end_reason: str | None = None
    """utterance: silence, max_duration, finalize or close."""
    predicted_label: str | None = None
    score: float | None = None
    top_k: list[dict[str, object]] | None = None
    """[{label, score}, …] as sent in ``alternatives``."""
    model_version: str | None = None
    role: str | None = None
    """champion (answered the client) or shadow (scored on the side)."""
    latency_ms: float | None = None
    """From the window that made the result due to the ``Results`` being queued (ms)."""
    # ---- what a compressed stream's client sent; null when ``pcm`` is what it sent -------
    received: bytes | None = None
    """The frame's bytes exactly as the client sent them (Opus, FLAC, a container's piece);
    empty for the PCM a decoder released only at the stream's end. Null for raw PCM streams,
    whose ``pcm`` is already the received bytes: they are never stored twice."""
    received_encoding: str | None = None
    """The ``encoding`` the client declared (``opus``, ``flac``), null when it declared none
    and the container was recognised by its first bytes."""
    received_container: str | None = None
    """The container the bytes are in: ``ogg``, ``matroska`` (WebM), ``flac`` or ``wav``."""

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
        received: bytes | None = None,
        received_encoding: str | None = None,
        received_container: str | None = None,
    ) -> SpoolRecord:
        return cls(
            kind=KIND_CHUNK,
            session_id=session_id,
            device_id=device_id,
            seq=seq,
            event_time=event_time,
            received_at=received_at or datetime.now(UTC),
            sample_rate=sample_rate,
            encoding=encoding,
            pcm=pcm,
            label=label,
            received=received,
            received_encoding=received_encoding,
            received_container=received_container,
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
        return cls._without_audio(
            KIND_SESSION_END,
            session_id=session_id,
            device_id=device_id,
            event_time=event_time,
            received_at=received_at,
            sample_rate=sample_rate,
            encoding=encoding,
            meta_json=meta_json,
        )

    @classmethod
    def decision(
        cls,
        *,
        final: bool,
        session_id: str,
        device_id: str,
        event_time: datetime,
        sample_rate: int,
        encoding: str,
        received_at: datetime | None = None,
        **fields: object,
    ) -> SpoolRecord:
        """A ``Results`` the gateway sent: ``final`` makes it an ``utterance`` record (the
        closed utterance and its final result), else an interim ``result``. ``event_time`` is
        the UTC time of ``start_sample``; ``fields`` are the decision fields above."""
        return cls._without_audio(
            KIND_UTTERANCE if final else KIND_RESULT,
            session_id=session_id,
            device_id=device_id,
            event_time=event_time,
            received_at=received_at,
            sample_rate=sample_rate,
            encoding=encoding,
            is_final=final,
            **fields,
        )

    @classmethod
    def shadow_result(cls, *, received_at: datetime | None = None, **fields: Any) -> SpoolRecord:
        """The challenger's answer for a segment the champion answered (``role`` shadow):
        the identity fields of :meth:`decision` plus the decision fields above.

        A ``result`` record even for a final segment: the utterance itself is the champion's
        ``utterance`` record, so a shadow never adds a ``silver.audio_events`` row. It carries
        the champion result's ``result_index``; ``is_final`` is True (only finals are shadowed).
        """
        return cls._without_audio(
            KIND_RESULT, received_at=received_at, is_final=True, role=ROLE_SHADOW, **fields
        )

    @classmethod
    def _without_audio(
        cls,
        kind: str,
        *,
        session_id: str,
        device_id: str,
        event_time: datetime,
        received_at: datetime | None,
        sample_rate: int,
        encoding: str,
        **fields: object,
    ) -> SpoolRecord:
        """A record that carries no audio (a session's end, a decision): no seq of its own."""
        return cls(
            kind=kind,  # type: ignore[arg-type]
            session_id=session_id,
            device_id=device_id,
            seq=SESSION_END_SEQ,
            event_time=event_time,
            received_at=received_at or datetime.now(UTC),
            sample_rate=sample_rate,
            encoding=encoding,
            pcm=b"",
            **fields,  # type: ignore[arg-type]
        )


def records_to_batch(records: Iterable[SpoolRecord]) -> pa.RecordBatch:
    """Spool records → one Arrow record batch with :data:`SPOOL_SCHEMA` (column-wise build)."""
    rows = list(records)
    columns = {name: [getattr(r, name) for r in rows] for name in SPOOL_SCHEMA.names}
    return pa.RecordBatch.from_pydict(columns, schema=SPOOL_SCHEMA)


WORKER_DIR_PREFIX = "worker-"
"""``<spool>/worker-K/``: the spool folder of gateway worker K (one writer per folder)."""


def worker_spool_dir(spool_dir: Path, worker: int) -> Path:
    return Path(spool_dir) / f"{WORKER_DIR_PREFIX}{worker}"


def spool_folders(spool_dir: Path) -> list[tuple[str, Path]]:
    """(name relative to the spool, folder) of every writer's folder: the spool itself (a
    single gateway process) and each ``worker-K/`` (``sonolake gateway --workers N``)."""
    spool_dir = Path(spool_dir)
    folders = [("", spool_dir)]
    if spool_dir.is_dir():
        with os.scandir(spool_dir) as entries:
            folders += sorted(
                (entry.name, Path(entry.path))
                for entry in entries
                if entry.name.startswith(WORKER_DIR_PREFIX) and entry.is_dir()
            )
    return folders


@dataclass(frozen=True, slots=True)
class Segment:
    """A sealed segment file and its place in the spool's order."""

    segment_id: int
    path: Path
    size_bytes: int
    folder: str = ""
    """The writer's folder relative to the spool ("" or ``worker-K``)."""

    @property
    def name(self) -> str:
        """The segment's path relative to the spool (what a batch manifest records)."""
        return f"{self.folder}/{self.path.name}" if self.folder else self.path.name


def segment_name(segment_id: int, *, sealed: bool = True) -> str:
    return f"{segment_id:0{ID_DIGITS}d}{SEALED_SUFFIX if sealed else OPEN_SUFFIX}"


def parse_id(name: str, suffix: str) -> int | None:
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


def batches_until_torn(data: pa.Buffer) -> tuple[list[pa.RecordBatch], str | None]:
    """Every complete record batch of an IPC stream and, if it stops early, why."""
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        return batches, f"no readable schema: {exc}"
    if not is_spool_schema(reader.schema):
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


def decode_segment(data: bytes | pa.Buffer, *, source: str = "<bytes>") -> pa.Table:
    """The records of a sealed segment's bytes (from a file, an object store or a message).

    ``data`` may be a memory-mapped file (:func:`pyarrow.memory_map`): the records' columns
    then point into the file's pages instead of a copy of them."""
    if len(data) == 0:
        raise SpoolCorrupt(f"{source}: empty segment file")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        schema = reader.schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpoolCorrupt(f"{source}: not an Arrow IPC stream ({exc})") from None
    if not is_spool_schema(schema):
        raise SpoolCorrupt(f"{source}: schema is not the spool schema: {schema}")
    if memoryview(data)[-len(IPC_EOS) :].tobytes() != IPC_EOS:
        raise SpoolCorrupt(f"{source}: truncated (no end-of-stream marker)")
    try:
        table = reader.read_all()
        table.validate(full=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpoolCorrupt(f"{source}: unreadable record batch ({exc})") from None
    return upgrade(table)


SPOOL_FORMATS = (SPOOL_SCHEMA_V1, SPOOL_SCHEMA_V2, SPOOL_SCHEMA)
"""Every format ever written, oldest first; each adds nullable columns to the one before."""


def is_spool_schema(schema: pa.Schema) -> bool:
    """Format 3, 2 or 1 (field names, types and nullability; metadata aside)."""
    return any(schema.equals(known) for known in SPOOL_FORMATS)


def upgrade(table: pa.Table) -> pa.Table:
    """Records of any format as format 3: an older segment gains the null columns it never
    had (format 1: no decisions; formats 1 and 2: no received bytes, as every stream was raw
    PCM then), so every reader downstream sees one schema."""
    for field in SPOOL_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.replace_schema_metadata(SPOOL_SCHEMA.metadata)
