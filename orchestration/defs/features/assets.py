"""gold.audio_features: one summary feature vector per event, per UTC event date.

For each event of the partition's day, the event's audio is put back together from bronze
(:mod:`orchestration.event_audio`) and summarised by :func:`features.summary_features`, the
same named vector (levels in dBFS, spectral shape in Hz, pooled log-mel) drift reports compare.
Idempotent: events that already have features of the current ``FEATURE_VERSION`` are skipped
(and counted in the metadata), and rows are merge-inserted on (event_id, feature_version).
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import FEATURE_VERSION, SUMMARY_COLUMNS, summary_features
from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS, AUDIO_FEATURES
from orchestration.event_audio import CHUNK_COLUMNS, EVENT_COLUMNS, event_segments
from orchestration.lake_keys import table_key
from orchestration.lake_stats import snapshot_metadata, table_definition_metadata, table_snapshot
from orchestration.partitions import event_date_partitions
from orchestration.resources import LakeResource

WRITER = "dagster:gold/audio_features"

NEW_EVENTS_LANDED = dg.AutomationCondition.eager().with_label("eager: new events landed in silver")


def _events_of_day(lake: LakeResource, day: date) -> pa.Table:
    return lake.open().read(
        AUDIO_EVENTS,
        columns=[*EVENT_COLUMNS, "device_id", "label", "event_date"],
        filter=[("event_date", "=", day)],
    )


def _existing_event_ids(lake: LakeResource, day: date) -> set[str]:
    opened = lake.open()
    if not opened.exists(AUDIO_FEATURES):
        return set()
    done = opened.read(
        AUDIO_FEATURES,
        columns=["event_id"],
        filter=[("event_date", "=", day), ("feature_version", "=", FEATURE_VERSION)],
    )
    return set(done.column("event_id").to_pylist())


def _chunks_of(lake: LakeResource, events: pa.Table) -> pa.Table:
    """The bronze chunks of the events' sessions (bronze is partitioned by ingest date)."""
    sessions = pa.array(sorted(set(events.column("session_id").to_pylist())), pa.string())
    return lake.open().read(
        AUDIO_CHUNKS,
        columns=CHUNK_COLUMNS,
        filter=pc.field("session_id").isin(sessions),
    )


@dg.asset(
    key=table_key(AUDIO_FEATURES),
    deps=[table_key(AUDIO_EVENTS), table_key(AUDIO_CHUNKS)],
    partitions_def=event_date_partitions,
    group_name="features",
    kinds={"python", "delta"},
    description=AUDIO_FEATURES.description,
    metadata={
        **table_definition_metadata(AUDIO_FEATURES),
        "feature_columns": ", ".join(SUMMARY_COLUMNS),
    },
    automation_condition=NEW_EVENTS_LANDED,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=1)),
    pool="lake_writer_gold_audio_features",
    code_version=FEATURE_VERSION,
)
def audio_features(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Summary features of the day's events that do not have them yet."""
    day = date.fromisoformat(context.partition_key)
    events = _events_of_day(lake, day)
    done = _existing_event_ids(lake, day)
    todo = events.filter(
        pc.invert(pc.is_in(events.column("event_id"), pa.array(sorted(done), pa.string())))
    )
    rows: list[dict[str, object]] = []
    if todo.num_rows:
        info = {
            r["event_id"]: r
            for r in todo.select(
                ["event_id", "session_id", "device_id", "label", "event_date"]
            ).to_pylist()
        }
        computed_at = datetime.now(UTC)
        for event in event_segments(todo, _chunks_of(lake, todo)):
            meta = info[event.event_id]
            rows.append(
                {
                    **meta,
                    "feature_version": FEATURE_VERSION,
                    "features": summary_features(event.audio_16k).astype(np.float32).tolist(),
                    "computed_at": computed_at,
                }
            )
    missing_audio = todo.num_rows - len(rows)
    version = None
    if rows:
        result = lake.open().merge_insert(
            AUDIO_FEATURES, pa.Table.from_pylist(rows, schema=AUDIO_FEATURES.schema), writer=WRITER
        )
        version = result.version
    context.log.info(
        f"{day}: {events.num_rows} events, {len(rows)} computed, {len(done)} already had "
        f"features {FEATURE_VERSION}, {missing_audio} without their chunks in bronze"
    )
    return dg.MaterializeResult(
        metadata={
            **snapshot_metadata(table_snapshot(lake, AUDIO_FEATURES)),
            "events_in_partition": events.num_rows,
            "computed": len(rows),
            "skipped_existing": len(done),
            "missing_audio": missing_audio,
            "feature_version": FEATURE_VERSION,
            "committed_version": -1 if version is None else version,
        }
    )
