"""The landing transform: spool segments in, lake rows out, as one Beam ``PTransform``.

:class:`LandSpool` knows nothing of where segments come from or where rows go. Its input is a
PCollection of ``(source, payload)`` pairs — a segment's name and its Arrow IPC bytes, read
from the local spool, an object store or a Kafka topic — optionally with the carry of the
previous micro-batch (dedup keys and chunk level statistics). It runs:

    decode → validate → gather the batch → land (dedup, bronze rows, the gateway's decisions
    as silver events and gold predictions, vectorised levels, session deltas) → tagged outputs

and returns a dict of PCollections: ``bronze`` (bronze.audio_chunks rows), ``events``
(silver.audio_events rows), ``predictions`` (gold.predictions rows), ``sessions`` (per-batch
deltas for silver.sessions), ``dead_letters`` (bronze.dead_letters rows) and ``carry``.
Elements are :class:`~streaming.sidecar.records.ArrowRows` tables, never single chunks, and
the landing step is columnar over the whole batch (:mod:`streaming.sidecar.landing`): no VAD,
no model, no per-session Python.

The local driver (:mod:`streaming.sidecar.driver`) stages the outputs with
:class:`StageOutputs` and commits them; a cluster job would end in a Delta sink instead —
only the ends change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS, DEAD_LETTERS, PREDICTIONS
from streaming.sidecar import records
from streaming.sidecar.landing import KEYS_SCHEMA, SESSION_DELTA_SCHEMA, LandingParams, land
from streaming.sidecar.levels import STATS_SCHEMA
from streaming.sidecar.records import CHUNK_SCHEMA, ArrowRows
from streaming.sidecar.staging import CARRY_FILES, write_table_atomic

ROWS, DEAD = "rows", "dead_letters"
BRONZE, EVENTS, PREDICTIONS_OUT, SESSIONS, CARRY = (
    "bronze",
    "events",
    "predictions",
    "sessions",
    "carry",
)
OUTPUTS = (BRONZE, EVENTS, PREDICTIONS_OUT, SESSIONS, DEAD, CARRY)
METRICS_NAMESPACE = "sonolake.sidecar"


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


class Stamp(beam.DoFn):
    """Give a segment's rows their earliest event time (the element's Beam timestamp)."""

    def process(self, element: ArrowRows) -> Iterator[Any]:
        yield TimestampedValue(element, records.min_event_time_s(element.table))


class LandBatch(beam.DoFn):
    """All of a batch's rows (and the previous carry) → lake rows, in one columnar pass."""

    def __init__(self, batch_time: datetime, params: LandingParams) -> None:
        self.batch_time = batch_time
        self.params = params
        self.chunks = Metrics.counter(METRICS_NAMESPACE, "chunks")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates")
        self.conflicts = Metrics.counter(METRICS_NAMESPACE, "conflicts")
        self.events = Metrics.counter(METRICS_NAMESPACE, "events")
        self.predictions = Metrics.counter(METRICS_NAMESPACE, "predictions")

    def process(
        self, parts: list[ArrowRows], carry: Sequence[tuple[Any, Any]] = ()
    ) -> Iterator[Any]:
        tables = [p.table for p in parts if p.table.num_rows]
        keys = pa.concat_tables([KEYS_SCHEMA.empty_table(), *(k.table for k, _ in carry)])
        stats = pa.concat_tables([STATS_SCHEMA.empty_table(), *(s.table for _, s in carry)])
        if not tables and not carry:
            return
        rows = pa.concat_tables(tables) if tables else CHUNK_SCHEMA.empty_table()
        landed = land(rows, keys, stats, self.params)
        self.chunks.inc(landed.bronze.num_rows)
        self.duplicates.inc(landed.duplicates)
        self.conflicts.inc(len(landed.dead_letters))
        self.events.inc(landed.events.num_rows)
        self.predictions.inc(landed.predictions.num_rows)
        for tag, table in (
            (BRONZE, landed.bronze),
            (EVENTS, landed.events),
            (PREDICTIONS_OUT, landed.predictions),
            (SESSIONS, landed.sessions),
        ):
            if table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, ArrowRows(table))
        if landed.dead_letters:
            dead = records.dead_letter_rows(landed.dead_letters, self.batch_time)
            yield beam.pvalue.TaggedOutput(DEAD, ArrowRows(dead))
        yield beam.pvalue.TaggedOutput(CARRY, (ArrowRows(landed.keys), ArrowRows(landed.stats)))


class LandSpool(beam.PTransform):
    """Spool segments (and an optional carry) → bronze, silver, gold and dead-letter rows.

    Locally one micro-batch runs in the global window: every segment's rows are gathered into
    one batch, landed together, and a carry is emitted for the next batch. ``window_s`` (a
    cluster under ``--streaming``) lands each event-time window of that many seconds as its
    batch instead; dedup and level statistics then reach within a window only.
    """

    def __init__(
        self,
        *,
        batch_time: datetime | None = None,
        params: LandingParams | None = None,
        window_s: float | None = None,
    ) -> None:
        super().__init__()
        self.batch_time = batch_time or datetime.now(UTC)
        self.params = params or LandingParams()
        self.window_s = window_s

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
        rows = valid[ROWS]
        if self.window_s is not None:
            rows = (
                rows
                | "Stamp" >> beam.ParDo(Stamp())
                | "Windows" >> beam.WindowInto(FixedWindows(self.window_s))
            )
            gathered = rows | "Gather" >> beam.combiners.ToList().without_defaults()
        else:
            # The global window always fires, empty or not: a batch of only a carry lands too.
            gathered = rows | "Gather" >> beam.combiners.ToList()
        side = {} if carry is None else {"carry": beam.pvalue.AsList(carry)}
        landed = gathered | "Land" >> beam.ParDo(
            LandBatch(self.batch_time, self.params), **side
        ).with_outputs(BRONZE, EVENTS, PREDICTIONS_OUT, SESSIONS, DEAD, CARRY)
        dead = (decoded[DEAD], valid[DEAD], landed[DEAD]) | "DeadLetters" >> beam.Flatten()
        return {
            BRONZE: landed[BRONZE],
            EVENTS: landed[EVENTS],
            PREDICTIONS_OUT: landed[PREDICTIONS_OUT],
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
    PREDICTIONS_OUT: PREDICTIONS.schema,
    SESSIONS: SESSION_DELTA_SCHEMA,
    DEAD: DEAD_LETTERS.schema,
}


def _stage_part(value: Any, folder: str, name: str) -> None:
    part = uuid.uuid4().hex
    if name == CARRY:
        keys, stats = value
        write_table_atomic(Path(folder) / f"{CARRY_FILES[0]}-{part}.arrow", keys.table)
        write_table_atomic(Path(folder) / f"{CARRY_FILES[1]}-{part}.arrow", stats.table)
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
