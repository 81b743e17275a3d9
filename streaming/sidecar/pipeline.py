"""The landing transform: spool segments in, lake rows out, as one Beam ``PTransform``.

:class:`LandSpool` knows nothing of where segments come from or where rows go. Its input is a
PCollection of ``(source, payload)`` pairs — a segment's name and its Arrow IPC bytes, read
from the local spool, an object store or a Kafka topic — optionally with the carry of open
sessions from the previous micro-batch. It runs:

    decode → validate → key by session, assign event time (→ session windows on a cluster)
    → group per session (with its carry) → batch sessions → enrich (dedup, VAD segments,
    levels, SNR, speech ratio, prediction) → tagged outputs

and returns a dict of PCollections: ``bronze`` (bronze.audio_chunks rows), ``events``
(silver.audio_events rows), ``sessions`` (per-batch deltas for silver.sessions),
``dead_letters`` (bronze.dead_letters rows) and ``carry`` (open sessions' state). Elements
are :class:`~streaming.sidecar.records.ArrowRows` tables, never single chunks.

The local driver (:mod:`streaming.sidecar.driver`) stages the outputs with :class:`StageOutputs` and
commits them; a cluster job would end in a Delta sink instead — only the ends change.
"""

from __future__ import annotations

import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import Sessions, TimestampedValue

from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS, DEAD_LETTERS
from streaming.sidecar import records
from streaming.sidecar.carry import carries_to_tables
from streaming.sidecar.enrich import (
    SESSION_DELTA_SCHEMA,
    SegmenterParams,
    SessionCarry,
    SessionResult,
    events_table,
    finish_session,
    prepare_session,
    session_delta,
    session_deltas_table,
)
from streaming.sidecar.records import ArrowRows
from streaming.sidecar.staging import CARRY_FILES, write_table_atomic

ROWS, DEAD = "rows", "dead_letters"
BRONZE, EVENTS, SESSIONS, CARRY = "bronze", "events", "sessions", "carry"
OUTPUTS = (BRONZE, EVENTS, SESSIONS, DEAD, CARRY)
METRICS_NAMESPACE = "sonolake.sidecar"
DEFAULT_SESSIONS_PER_CALL = 256
"""Sessions enriched per call: VAD and the classifier run batched across them."""


class Classifier(Protocol):
    """What enrichment needs of a model (``models.serving.ServingEngine`` fits)."""

    @property
    def model_version(self) -> str | None: ...

    def classify_batch(self, windows: np.ndarray) -> Sequence[Any]: ...


ClassifierLoader = Callable[[], Classifier | None]
"""Builds (or finds) the classifier inside a worker; None: land events without predictions."""

_IN_PROCESS_CLASSIFIERS: dict[str, Classifier | None] = {}


class InProcessClassifier:
    """Hands a classifier living in the driver to the transform on the in-process runner.

    Only a key is pickled with the pipeline; the engine (an ONNX session, not picklable) stays
    in the process. Cluster runners need a loader that builds the engine on the worker, e.g.
    ``functools.partial(ServingEngine.from_bundle, path)``.
    """

    def __init__(self, classifier: Classifier | None) -> None:
        self.key = uuid.uuid4().hex
        _IN_PROCESS_CLASSIFIERS[self.key] = classifier

    def __call__(self) -> Classifier | None:
        return _IN_PROCESS_CLASSIFIERS.get(self.key)

    def release(self) -> None:
        _IN_PROCESS_CLASSIFIERS.pop(self.key, None)

    def __getstate__(self) -> dict[str, str]:
        return {"key": self.key}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.key = state["key"]


class DecodeSegment(beam.DoFn):
    """``(source, payload)`` → the segment's records, or a dead letter for the whole segment."""

    def __init__(self, quarantined_at: datetime) -> None:
        self.quarantined_at = quarantined_at
        self.segments = Metrics.counter(METRICS_NAMESPACE, "segments")
        self.bad_segments = Metrics.counter(METRICS_NAMESPACE, "bad_segments")

    def process(self, element: tuple[str, bytes]) -> Iterator[Any]:
        source, payload = element
        table, dead = records.decode(source, payload)
        self.segments.inc()
        if dead is not None:
            self.bad_segments.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD, ArrowRows(records.dead_letter_rows([dead], self.quarantined_at))
            )
        elif table is not None and table.num_rows:
            yield ArrowRows(table)


class ValidateRecords(beam.DoFn):
    """Vectorised record checks; refused records become dead letters with the reason."""

    def __init__(self, quarantined_at: datetime) -> None:
        self.quarantined_at = quarantined_at
        self.refused = Metrics.counter(METRICS_NAMESPACE, "refused_records")

    def process(self, element: ArrowRows) -> Iterator[Any]:
        valid, dead = records.validate(element.table)
        if dead:
            self.refused.inc(len(dead))
            yield beam.pvalue.TaggedOutput(
                DEAD, ArrowRows(records.dead_letter_rows(dead, self.quarantined_at))
            )
        if valid.num_rows:
            yield ArrowRows(valid)


def shard_of(session_id: str, shards: int) -> int:
    """Stable shard of a session (the same in every process and every run)."""
    return zlib.crc32(session_id.encode()) % shards


class KeyRows(beam.DoFn):
    """Key a segment's rows for grouping, stamped with their earliest event time.

    ``shards=None``: one key per session (needed for event-time session windows). A number:
    sessions hash into that many shards, each group holding whole sessions. On the in-process
    runner one shard is fastest: a handful of large elements instead of one per session per
    segment, and VAD batched across every session of the batch.
    """

    def __init__(self, shards: int | None) -> None:
        self.shards = shards

    def process(self, element: ArrowRows) -> Iterator[Any]:
        table = element.table
        if self.shards == 1:
            yield TimestampedValue((0, element), records.min_event_time_s(table))
            return
        for session_id, rows in records.split_by_session(table):
            key: int | str = (
                session_id if self.shards is None else shard_of(session_id, self.shards)
            )
            yield TimestampedValue((key, ArrowRows(rows)), records.min_event_time_s(rows))


class LandSessions(beam.DoFn):
    """Enrich a batch of sessions at once: VAD and the classifier run across all of them."""

    def __init__(
        self,
        params: SegmenterParams,
        batch_time: datetime,
        classifier: ClassifierLoader | None,
    ) -> None:
        self.params = params
        self.batch_time = batch_time
        self.classifier_loader = classifier
        self.classifier: Classifier | None = None
        self.chunks = Metrics.counter(METRICS_NAMESPACE, "chunks")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates")
        self.events = Metrics.counter(METRICS_NAMESPACE, "events")

    def setup(self) -> None:
        self.classifier = self.classifier_loader() if self.classifier_loader else None

    def process(
        self, batch: list[tuple[str, Iterable[Any]]], latest_received_us: Sequence[int] = ()
    ) -> Iterator[Any]:
        """``latest_received_us``: per segment, its latest ``received_at``; their maximum is
        the batch watermark that decides which quiet sessions are idle."""
        from streaming.vad import speech_probabilities_many

        watermark_us = max(latest_received_us, default=0)

        rows: dict[str, list[pa.Table]] = defaultdict(list)
        carries: dict[str, SessionCarry] = {}
        for _key, values in batch:
            for value in values:
                if isinstance(value, SessionCarry):
                    carries[value.session_id] = value
                else:
                    for session_id, part in records.split_by_session(value.table):
                        rows[session_id].append(part)
        works = []
        failed: list[dict[str, Any]] = []
        for session_id in sorted(rows.keys() | carries.keys()):
            try:
                work = prepare_session(
                    session_id, rows.get(session_id, []), carries.get(session_id)
                )
            except Exception as exc:  # one bad session must not stop the batch
                failed += _session_dead_letters(session_id, rows.get(session_id, []), exc)
                continue
            if work is not None:
                works.append(work)
        if failed:
            yield beam.pvalue.TaggedOutput(
                DEAD, ArrowRows(records.dead_letter_rows(failed, self.batch_time))
            )
        if not works:
            return
        probs = speech_probabilities_many(
            [w.audio_16k for w in works], gate_dbfs=self.params.vad_gate_dbfs
        )
        results = [
            self._finish(work, p, watermark_us or work.last_received_us)
            for work, p in zip(works, probs, strict=True)
        ]
        bronze = [w.bronze for w in works if w.bronze.num_rows]
        if bronze:
            table = pa.concat_tables(bronze)
            self.chunks.inc(table.num_rows)
            yield beam.pvalue.TaggedOutput(BRONZE, ArrowRows(table))
        self.duplicates.inc(sum(w.duplicates for w in works))
        events = [e for r in results for e in r.events]
        if events:
            windows = [w for r in results for w in r.windows]
            self._predict(events, windows)
            self.events.inc(len(events))
            yield beam.pvalue.TaggedOutput(EVENTS, ArrowRows(events_table(events)))
        deltas = [
            r.delta
            for r in results
            if r.delta["chunks"] or r.delta["events"] or r.delta["dropped_chunks"] is not None
        ]
        if deltas:
            yield beam.pvalue.TaggedOutput(SESSIONS, ArrowRows(session_deltas_table(deltas)))
        dead = [
            {"source": row.pop("spool_segment"), **row} for w in works for row in w.dead_letters
        ]
        if dead:
            table = records.dead_letter_rows(dead, self.batch_time)
            yield beam.pvalue.TaggedOutput(DEAD, ArrowRows(table))
        carried = [r.carry for r in results if r.carry is not None]
        if carried:
            yield beam.pvalue.TaggedOutput(CARRY, carried)

    def _finish(self, work: Any, probs: np.ndarray, watermark_us: int) -> SessionResult:
        """Segments and rows of one session; on an unexpected error its chunks still land in
        bronze and the session gets a dead letter instead of segments (and no carry)."""
        try:
            return finish_session(work, probs, self.params, watermark_us)
        except Exception as exc:
            work.dead_letters.append(
                {
                    "spool_segment": f"session:{work.session_id}",
                    "record_index": None,
                    "session_id": work.session_id,
                    "seq": None,
                    "reason": f"segments could not be computed: {type(exc).__name__}: {exc}",
                    "pcm": None,
                }
            )
            return SessionResult([], [], session_delta(work, 0.0, 0), None)

    def _predict(self, events: list[dict[str, Any]], windows: list[np.ndarray]) -> None:
        classifier = self.classifier
        if classifier is None or classifier.model_version is None:
            return
        predictions = classifier.classify_batch(np.stack(windows))
        for event, prediction in zip(events, predictions, strict=True):
            event["predicted_label"] = prediction.label
            event["score"] = float(prediction.score)
            event["model_version"] = prediction.model_version or classifier.model_version


def _session_dead_letters(
    session_id: str, parts: list[pa.Table], exc: Exception
) -> list[dict[str, Any]]:
    reason = f"session could not be landed: {type(exc).__name__}: {exc}"
    out = []
    for part in parts:
        lineage = part.select(["spool_segment", "record_index", "seq", "pcm"]).to_pylist()
        for row in lineage:
            out.append({**row, "source": row.pop("spool_segment"), "session_id": session_id})
            out[-1]["reason"] = reason
            out[-1]["payload"] = out[-1].pop("pcm")
    return out


class LandSpool(beam.PTransform):
    """Spool segments (and an optional carry) → bronze, silver and dead-letter rows.

    ``session_gap_s`` switches to event-time session windows (cluster, ``--streaming``): rows
    are keyed per session, each fired window holds a whole session, so nothing is carried.
    Without it the transform runs one micro-batch in the global window, rows are keyed into
    ``shards`` groups of whole sessions, and a carry is emitted for sessions still open.
    """

    def __init__(
        self,
        *,
        batch_time: datetime | None = None,
        params: SegmenterParams | None = None,
        classifier: ClassifierLoader | None = None,
        session_gap_s: float | None = None,
        sessions_per_call: int = DEFAULT_SESSIONS_PER_CALL,
        shards: int = 1,
    ) -> None:
        super().__init__()
        self.batch_time = batch_time or datetime.now(UTC)
        self.params = params or SegmenterParams()
        if session_gap_s is not None:
            self.params = replace(self.params, flush_all=True)
        self.classifier = classifier
        self.session_gap_s = session_gap_s
        self.sessions_per_call = sessions_per_call
        if shards < 1:
            raise ValueError(f"shards={shards}; use 1 or more")
        self.shards: int | None = None if session_gap_s is not None else shards

    def expand(self, inputs: Any) -> dict[str, beam.PCollection]:
        segments, carry = (
            (inputs["segments"], inputs.get("carry"))
            if isinstance(inputs, dict)
            else (inputs, None)
        )
        decoded = segments | "Decode" >> beam.ParDo(DecodeSegment(self.batch_time)).with_outputs(
            DEAD, main=ROWS
        )
        valid = decoded[ROWS] | "Validate" >> beam.ParDo(
            ValidateRecords(self.batch_time)
        ).with_outputs(DEAD, main=ROWS)
        latest_received = valid[ROWS] | "LatestReceived" >> beam.Map(
            lambda rows: records.max_received_us(rows.table)
        )
        shards = self.shards
        keyed = valid[ROWS] | "KeyRows" >> beam.ParDo(KeyRows(shards))
        if self.session_gap_s is not None:
            keyed = keyed | "SessionWindows" >> beam.WindowInto(Sessions(self.session_gap_s))
        parts = [keyed]
        if carry is not None:
            parts.append(
                carry
                | "OneCarryEach" >> beam.FlatMap(lambda carries: carries)
                | "KeyCarry"
                >> beam.Map(
                    lambda c: (
                        c.session_id if shards is None else shard_of(c.session_id, shards),
                        c,
                    )
                )
            )
        grouped = parts | "WithCarry" >> beam.Flatten() | "PerSession" >> beam.GroupByKey()
        if shards is None:  # one group per session: batch them so VAD runs across sessions
            batches = grouped | "BatchSessions" >> beam.BatchElements(
                min_batch_size=self.sessions_per_call, max_batch_size=self.sessions_per_call
            )
        else:  # each group already holds many whole sessions
            batches = grouped | "AsBatch" >> beam.Map(lambda group: [group])
        landed = batches | "Enrich" >> beam.ParDo(
            LandSessions(self.params, self.batch_time, self.classifier),
            latest_received_us=beam.pvalue.AsList(latest_received),
        ).with_outputs(BRONZE, EVENTS, SESSIONS, DEAD, CARRY)
        dead = (decoded[DEAD], valid[DEAD], landed[DEAD]) | "DeadLetters" >> beam.Flatten()
        return {
            BRONZE: landed[BRONZE],
            EVENTS: landed[EVENTS],
            SESSIONS: landed[SESSIONS],
            DEAD: dead,
            CARRY: landed[CARRY],
        }


class ReadSegmentFiles(beam.PTransform):
    """Local source: segment files → ``(name, bytes)``; a missing file is a dead letter later."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self.paths = [str(p) for p in paths]

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "SegmentPaths" >> beam.Create(self.paths, reshuffle=False)
            | "ReadBytes" >> beam.Map(_read_file)
        )


def _read_file(path: str) -> tuple[str, bytes]:
    try:
        return Path(path).name, Path(path).read_bytes()
    except OSError:
        return Path(path).name, b""


STAGED_SCHEMAS: dict[str, pa.Schema] = {
    BRONZE: AUDIO_CHUNKS.schema,
    EVENTS: AUDIO_EVENTS.schema,
    SESSIONS: SESSION_DELTA_SCHEMA,
    DEAD: DEAD_LETTERS.schema,
}


def _stage_part(value: Any, folder: str, name: str) -> None:
    part = uuid.uuid4().hex
    if name == CARRY:
        states, chunks = carries_to_tables(value)
        write_table_atomic(Path(folder) / f"{CARRY_FILES[0]}-{part}.arrow", states)
        write_table_atomic(Path(folder) / f"{CARRY_FILES[1]}-{part}.arrow", chunks)
    else:
        write_table_atomic(Path(folder) / f"{name}-{part}.arrow", value.table)


class StageOutputs(beam.PTransform):
    """Local sink: each element of each output of :class:`LandSpool` as an Arrow file part.

    No grouping step: every element is written where it is produced (one part per element;
    elements are whole tables, so parts are few). The driver trusts the parts only once the
    pipeline has finished and it has written its ``_DONE`` marker.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = str(folder)

    def expand(self, outputs: dict[str, beam.PCollection]) -> list[beam.PCollection]:
        return [
            outputs[name] | f"Stage_{name}" >> beam.Map(_stage_part, self.folder, name)
            for name in OUTPUTS
        ]
