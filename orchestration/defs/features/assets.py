"""gold.audio_features: one summary feature vector per event, per UTC event date.

The rows come from :func:`models.lake_features.features_of_day` (each event's audio put back
together from bronze, summarised into the named vector drift reports compare). Idempotent:
events that already have features of the current ``FEATURE_VERSION`` are skipped (and counted
in the metadata), and rows are merge-inserted on (event_id, feature_version).
"""

from datetime import date, timedelta

import dagster as dg

from features import FEATURE_VERSION, SUMMARY_COLUMNS
from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS, AUDIO_FEATURES
from models.lake_features import features_of_day
from orchestration.keys import table_key, writer_pool
from orchestration.lake_metadata import snapshot_metadata, table_definition_metadata
from orchestration.partitions import event_date_partitions
from orchestration.resources import LakeResource

WRITER = "dagster:gold/audio_features"

NEW_EVENTS_LANDED = dg.AutomationCondition.eager().with_label("eager: new events landed in silver")


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
    pool=writer_pool(AUDIO_FEATURES),
    code_version=FEATURE_VERSION,
)
def audio_features(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Summary features of the day's events that do not have them yet."""
    day = date.fromisoformat(context.partition_key)
    opened = lake.open()
    found = features_of_day(opened, day)
    version = None
    if found.rows.num_rows:
        version = opened.merge_insert(AUDIO_FEATURES, found.rows, writer=WRITER).version
    context.log.info(
        f"{day}: {found.events} events, {found.rows.num_rows} computed, {found.already_done} "
        f"already had features {FEATURE_VERSION}, {found.missing_audio} without their chunks "
        "in bronze"
    )
    return dg.MaterializeResult(
        metadata={
            **snapshot_metadata(opened.table_snapshot(AUDIO_FEATURES)),
            "events_in_partition": found.events,
            "computed": found.rows.num_rows,
            "skipped_existing": found.already_done,
            "missing_audio": found.missing_audio,
            "feature_version": FEATURE_VERSION,
            "committed_version": -1 if version is None else version,
        }
    )
