"""The lake's contract: every table, its Arrow schema, partitioning, key and single writer.

Names are the contract other packages (and analysts' SQL) depend on; columns may grow by
additive, nullable evolution only. Times are UTC microseconds. Each table has exactly one
writer (``owner``): the sidecar owns bronze and silver, each Dagster asset owns its own table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """What a table is: where it lives in the lake, its schema and who may write it."""

    name: str
    """``<layer>.<table>``, the name analysts use in SQL."""
    schema: pa.Schema
    partition_by: tuple[str, ...]
    primary_key: tuple[str, ...]
    description: str
    owner: str
    """The one process or asset that writes this table."""
    column_docs: dict[str, str] = field(default_factory=dict)
    cluster_by: tuple[str, ...] = ()
    """Columns the nightly maintenance z-orders each closed partition by (none: compaction
    only), so a query filtering on them skips the Parquet row groups of other values."""

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def table(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def path(self) -> str:
        """Path of the table below the lake root: ``<layer>/<table>``."""
        return f"{self.layer}/{self.table}"


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(name, dtype, nullable=nullable) for name, dtype, nullable in fields])


AUDIO_CHUNKS = TableSpec(
    name="bronze.audio_chunks",
    schema=_schema(
        ("session_id", pa.string(), False),
        ("device_id", pa.string(), False),
        ("seq", pa.int64(), False),
        ("event_time", TIMESTAMP, False),
        ("received_at", TIMESTAMP, False),
        ("sample_rate", pa.int32(), False),
        ("encoding", pa.string(), False),
        ("num_samples", pa.int32(), False),
        ("pcm", pa.binary(), False),
        ("label", pa.string(), True),
        ("spool_segment", pa.string(), False),
        ("ingest_date", pa.date32(), False),
        ("received", pa.binary(), True),
        ("received_encoding", pa.string(), True),
        ("received_container", pa.string(), True),
    ),
    partition_by=("ingest_date",),
    primary_key=("session_id", "seq"),
    description="One row per accepted chunk: the audio as the client sent it and the PCM the "
    "pipeline reads (the same bytes, stored once, for raw PCM streams).",
    owner="sidecar",
    column_docs={
        "seq": "Client chunk sequence number within the session, from 0.",
        "event_time": "When the chunk's first sample was captured (session start + offset).",
        "encoding": "Encoding of pcm: linear16 or mulaw (linear16 for decoded streams).",
        "pcm": "The audio the pipeline reads: little-endian PCM16 or 8-bit mu-law, the bytes "
        "as received for raw PCM streams, decoded for compressed ones (possibly empty).",
        "received": "Bytes exactly as the client sent them, for compressed or containerised "
        "streams (Opus, FLAC, WebM/Ogg, WAV); null when they are pcm (raw PCM streams).",
        "received_encoding": "The encoding the client declared (opus, flac); null for raw "
        "PCM and for containers sent with no encoding.",
        "received_container": "Container of the received bytes: ogg, matroska, flac or wav.",
        "label": "Ground truth sent by the client with a Label message, if any.",
        "spool_segment": "Spool segment the chunk was landed from (lineage).",
    },
)

AUDIO_EVENTS = TableSpec(
    name="silver.audio_events",
    schema=_schema(
        ("event_id", pa.string(), False),
        ("session_id", pa.string(), False),
        ("device_id", pa.string(), False),
        ("start_time", TIMESTAMP, False),
        ("end_time", TIMESTAMP, False),
        ("duration_s", pa.float64(), False),
        ("rms_dbfs", pa.float64(), False),
        ("peak_dbfs", pa.float64(), False),
        ("clipping_ratio", pa.float64(), False),
        ("snr_db", pa.float64(), False),
        ("speech_ratio", pa.float64(), False),
        ("predicted_label", pa.string(), True),
        ("score", pa.float64(), True),
        ("model_version", pa.string(), True),
        ("label", pa.string(), True),
        ("first_seq", pa.int64(), False),
        ("last_seq", pa.int64(), False),
        ("sample_rate", pa.int32(), False),
        ("feature_version", pa.string(), False),
        ("event_date", pa.date32(), False),
    ),
    partition_by=("event_date",),
    primary_key=("event_id",),
    description="One row per detected speech or sound segment, with levels and the prediction.",
    owner="sidecar",
    cluster_by=("device_id",),
    column_docs={
        "event_id": "<session_id>/u<utterance>: the gateway's utterance number, so replays "
        "land once and gold.predictions rows join on it.",
        "snr_db": "Estimated signal-to-noise ratio in dB.",
        "speech_ratio": "Fraction of the utterance's VAD windows judged speech (0..1), live.",
        "rms_dbfs": "RMS level in dBFS over the utterance (its 20-ms frames); peak and "
        "clipping are over the chunks it spans.",
        "label": "Ground truth from the client's Label messages, if any.",
    },
)

SESSIONS = TableSpec(
    name="silver.sessions",
    schema=_schema(
        ("session_id", pa.string(), False),
        ("device_id", pa.string(), False),
        ("encoding", pa.string(), False),
        ("sample_rate", pa.int32(), False),
        ("started_at", TIMESTAMP, False),
        ("ended_at", TIMESTAMP, False),
        ("chunks", pa.int64(), False),
        ("dropped_chunks", pa.int64(), False),
        ("audio_s", pa.float64(), False),
        ("speech_s", pa.float64(), False),
        ("events", pa.int64(), False),
        ("session_date", pa.date32(), False),
    ),
    partition_by=("session_date",),
    primary_key=("session_id",),
    description="One row per streaming session: device, format, span, chunk and drop counts.",
    owner="sidecar",
    column_docs={
        "session_date": "UTC day the gateway opened the session (read from its UUIDv7 id), so "
        "the row never moves partition; for any other id, the day of started_at",
    },
)

DEAD_LETTERS = TableSpec(
    name="bronze.dead_letters",
    schema=_schema(
        ("source", pa.string(), False),
        ("record_index", pa.int64(), True),
        ("session_id", pa.string(), True),
        ("seq", pa.int64(), True),
        ("reason", pa.string(), False),
        ("quarantined_at", TIMESTAMP, False),
        ("payload", pa.binary(), True),
        ("ingest_date", pa.date32(), False),
    ),
    partition_by=("ingest_date",),
    primary_key=("source", "record_index"),
    description="Malformed spool records and segments, kept with the reason they were refused.",
    owner="sidecar",
)

AUDIO_FEATURES = TableSpec(
    name="gold.audio_features",
    schema=_schema(
        ("event_id", pa.string(), False),
        ("session_id", pa.string(), False),
        ("device_id", pa.string(), False),
        ("event_date", pa.date32(), False),
        ("feature_version", pa.string(), False),
        ("features", pa.list_(pa.float32()), False),
        ("label", pa.string(), True),
        ("computed_at", TIMESTAMP, False),
    ),
    partition_by=("event_date",),
    primary_key=("event_id", "feature_version"),
    description="One row per event: its summary feature vector and the feature-set version.",
    owner="dagster:gold/audio_features",
)

LIVE_RUN_ID = "live"
"""``gold.predictions.run_id`` of what the gateway decided live (reprocess runs have their own)."""
ROLE_CHAMPION = "champion"
"""``gold.predictions.role`` of a result a client was sent."""
ROLE_SHADOW = "shadow"
"""``gold.predictions.role`` of the challenger's answer for the same segment (never sent)."""

PREDICTIONS = TableSpec(
    name="gold.predictions",
    schema=_schema(
        ("run_id", pa.string(), False),
        ("prediction_id", pa.string(), False),
        ("session_id", pa.string(), False),
        ("device_id", pa.string(), False),
        ("utterance", pa.int64(), False),
        ("event_id", pa.string(), False),
        ("result_index", pa.int64(), False),
        ("is_final", pa.bool_(), False),
        ("speech_final", pa.bool_(), False),
        ("start_s", pa.float64(), False),
        ("duration_s", pa.float64(), False),
        ("start_time", TIMESTAMP, False),
        ("end_time", TIMESTAMP, False),
        ("predicted_label", pa.string(), True),
        ("score", pa.float64(), True),
        (
            "top_k",
            pa.list_(pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float64())])),
            True,
        ),
        ("model_version", pa.string(), True),
        ("role", pa.string(), False),
        ("latency_ms", pa.float64(), True),
        ("label", pa.string(), True),
        ("sent_at", TIMESTAMP, False),
        ("prediction_date", pa.date32(), False),
    ),
    partition_by=("prediction_date",),
    primary_key=("run_id", "prediction_id"),
    description=(
        "One row per result the gateway sent (interim and final), landed from its spooled "
        "decisions; reprocess runs add their own rows under their run_id."
    ),
    owner="sidecar",
    column_docs={
        "run_id": "'live' for what the gateway sent; a reprocess run's id otherwise.",
        "prediction_id": "<session_id>/r<result_index>: the result's number in its session.",
        "event_id": "<session_id>/u<utterance>: the silver.audio_events row of the utterance.",
        "start_s": "Stream clock (seconds since the stream's first sample), as the client saw.",
        "latency_ms": "From the window that made the result due to the Results being queued.",
        "label": "Ground truth from the client's Label messages at the time, if any.",
        "role": "champion (answered the client) or shadow (scored on the side).",
    },
)

DRIFT_REPORTS = TableSpec(
    name="monitoring.drift_reports",
    schema=_schema(
        ("report_id", pa.string(), False),
        ("created_at", TIMESTAMP, False),
        ("reference_model_version", pa.string(), True),
        ("window_start", TIMESTAMP, True),
        ("window_end", TIMESTAMP, True),
        ("n_reference", pa.int64(), False),
        ("n_current", pa.int64(), False),
        ("drift_share", pa.float64(), False),
        ("drifted_columns", pa.int64(), False),
        ("dataset_drift", pa.bool_(), False),
        ("columns_json", pa.string(), False),
        ("html_uri", pa.string(), True),
        ("report_date", pa.date32(), False),
    ),
    partition_by=("report_date",),
    primary_key=("report_id",),
    description="Evidently data-drift reports: recent features against the champion's reference.",
    owner="dagster:monitoring/drift_reports",
)

MODEL_EVALUATIONS = TableSpec(
    name="monitoring.model_evaluations",
    schema=_schema(
        ("evaluation_id", pa.string(), False),
        ("evaluated_at", TIMESTAMP, False),
        ("model_name", pa.string(), False),
        ("model_version", pa.string(), False),
        ("artifact", pa.string(), False),
        ("dataset", pa.string(), False),
        ("accuracy", pa.float64(), True),
        ("macro_f1", pa.float64(), True),
        ("per_class_f1_json", pa.string(), True),
        ("latency_us_p50", pa.float64(), True),
        ("latency_us_p99", pa.float64(), True),
        ("windows_per_s", pa.float64(), True),
        ("action", pa.string(), False),
        ("champion_before", pa.string(), True),
        ("champion_after", pa.string(), True),
        ("gate_passed", pa.bool_(), True),
        ("reason", pa.string(), True),
        ("evaluation_date", pa.date32(), False),
    ),
    partition_by=("evaluation_date",),
    primary_key=("evaluation_id",),
    description="Every evaluation, promotion and rollback of a model version, with the verdict.",
    owner="models.registry",
    column_docs={"action": "evaluate | promote | reject | rollback"},
)

ERASURES = TableSpec(
    name="monitoring.erasures",
    schema=_schema(
        ("erasure_id", pa.string(), False),
        ("device_sha256", pa.string(), False),
        ("requested_by", pa.string(), False),
        ("started_at", TIMESTAMP, False),
        ("completed_at", TIMESTAMP, False),
        ("tables_json", pa.string(), False),
        ("rows_removed", pa.int64(), False),
        ("files_vacuumed", pa.int64(), False),
        ("spool_records_removed", pa.int64(), False),
        ("vacuum_retention_hours", pa.float64(), False),
        ("erasure_date", pa.date32(), False),
    ),
    partition_by=("erasure_date",),
    primary_key=("erasure_id",),
    description="Every per-device erasure: when, which tables, how many rows (never the data).",
    owner="lake_schemas.erasure",
    column_docs={
        "device_sha256": "SHA-256 (hex) of the erased device id: provable, not the id itself.",
        "tables_json": "JSON object: table name -> rows removed from it.",
        "files_vacuumed": "Superseded data files deleted because they still held the rows.",
    },
)

ALL_TABLES: tuple[TableSpec, ...] = (
    AUDIO_CHUNKS,
    DEAD_LETTERS,
    AUDIO_EVENTS,
    SESSIONS,
    AUDIO_FEATURES,
    PREDICTIONS,
    DRIFT_REPORTS,
    MODEL_EVALUATIONS,
    ERASURES,
)
TABLES: dict[str, TableSpec] = {spec.name: spec for spec in ALL_TABLES}


def get_table(name: str) -> TableSpec:
    """Look a table up by its ``layer.table`` name, with an error that lists the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise KeyError(f"unknown table {name!r}; known tables: {known}") from None


CHECKPOINT_INTERVAL = 100
"""Commits between Delta checkpoints (Delta's default, chosen deliberately): opening a table
reads its last checkpoint plus at most this many commit files; a writer that keeps its table
open reads only the new commits (``delta.OpenTables``)."""
LOG_RETENTION = "interval 7 days"
"""How long commit files are kept (Delta's default is 30 days). Older ones are removed after a
checkpoint; time travel reaches back this far, the same 7 days the maintenance vacuum keeps.
A local lake also bounds its logs in commits (``CompactionPolicy.log_commits``), since
delta-rs lists a local log whole on every commit; an object store lists from an offset."""
DELETED_FILE_RETENTION = "interval 7 days"
"""How long files removed by compaction stay readable for time travel before vacuum may go."""
TABLE_PROPERTIES: dict[str, str] = {
    "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    "delta.logRetentionDuration": LOG_RETENTION,
    "delta.deletedFileRetentionDuration": DELETED_FILE_RETENTION,
    "delta.enableExpiredLogCleanup": "true",
}
"""Set on every table the Lake creates (the catalog's own tables included)."""
