"""monitoring.drift_reports: recent events' features against the champion's training reference.

Each report covers the events whose features were computed since the previous report (or, for
a new champion, since its training set was taken), so a report answers "is what came in since I
last looked like what the serving model learned from?". The window is processing time: the
devices' event times come from their stream clocks. The Evidently HTML is stored in the lake
beside the tables (``monitoring/drift_html/<report_id>.html``) and linked from the asset's
metadata; the verdict lands as one row in the table, which the retraining sensor watches.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import FEATURE_VERSION, SUMMARY_COLUMNS
from lake_schemas.tables import AUDIO_FEATURES, DRIFT_REPORTS, MODEL_EVALUATIONS
from models.drift import (
    DEFAULT_DRIFT_SHARE,
    MIN_ROWS,
    NotEnoughData,
    detect_drift,
    features_frame,
    report_row,
    report_table,
)
from orchestration.defs.training.keys import CHAMPION_MODEL, MODEL_EVALUATION
from orchestration.drift_reference import load_reference
from orchestration.lake_keys import table_key
from orchestration.lake_stats import snapshot_metadata, table_definition_metadata, table_snapshot
from orchestration.resources import LakeResource, ModelRegistryResource

WRITER = "dagster:monitoring/drift_reports"
HTML_DIR = "monitoring/drift_html"
"""Where the Evidently HTML reports go, below the lake root."""

model_evaluations = dg.AssetSpec(
    key=table_key(MODEL_EVALUATIONS),
    deps=[MODEL_EVALUATION, CHAMPION_MODEL],
    description=MODEL_EVALUATIONS.description
    + " Written by the model registry when the gate rejects a candidate or promotion moves "
    "the champion (and by `sonolake promote|rollback`).",
    group_name="monitoring",
    kinds={"delta", "mlflow"},
    metadata=table_definition_metadata(MODEL_EVALUATIONS),
)
"""monitoring.model_evaluations in the graph: the registry writes it, the gate and promotion
report its new versions, dbt reads it."""


class DriftConfig(dg.Config):
    """Knobs of one drift report."""

    drift_share: float = DEFAULT_DRIFT_SHARE
    """Dataset drift when at least this share (0..1) of feature columns drifted."""
    min_events: int = MIN_ROWS
    """Fewer new events than this and no report is made (too little to test)."""
    max_events: int = 5000
    """At most this many of the newest events are compared (bounds the report's cost)."""


def _previous_window_end(lake: LakeResource) -> datetime | None:
    opened = lake.open()
    if not opened.exists(DRIFT_REPORTS):
        return None
    ends = opened.read(DRIFT_REPORTS, columns=["window_end"]).column("window_end")
    return pc.max(ends).as_py()


def _new_features(lake: LakeResource, since: datetime | None, limit: int) -> pa.Table:
    """The newest ``limit`` feature rows computed after ``since``: event_id, computed_at, features.

    The window is in processing time (when features were computed), never in the devices'
    event time: a replay faster than real time stamps its events minutes in the future.
    """
    opened = lake.open()
    if not opened.exists(AUDIO_FEATURES):
        return AUDIO_FEATURES.schema.empty_table().select(["event_id", "computed_at", "features"])
    flt = pc.field("feature_version") == FEATURE_VERSION
    if since is not None:
        flt = flt & (pc.field("computed_at") > pa.scalar(since, pa.timestamp("us", tz="UTC")))
    rows = opened.read(AUDIO_FEATURES, columns=["event_id", "computed_at", "features"], filter=flt)
    return rows.sort_by([("computed_at", "descending")]).slice(0, limit)


def _skip(reason: str, **extra: int | str) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"skipped": reason, **extra})


def _columns_markdown(columns: list) -> str:
    lines = ["| column | method | score | threshold | drifted |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {c.column} | {c.method} | {c.score:.4g} | {c.threshold:.4g} | "
        f"{'yes' if c.drifted else 'no'} |"
        for c in columns
    ]
    return "\n".join(lines)


@dg.asset(
    key=table_key(DRIFT_REPORTS),
    deps=[table_key(AUDIO_FEATURES), CHAMPION_MODEL],
    group_name="monitoring",
    kinds={"evidently", "delta"},
    description=DRIFT_REPORTS.description,
    metadata=table_definition_metadata(DRIFT_REPORTS),
    automation_condition=dg.AutomationCondition.eager().with_label(
        "eager: after new features or a new champion"
    ),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=1)),
    retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
    pool="lake_writer_monitoring_drift_reports",
)
def drift_reports(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """Compare the events since the last report with the champion's training reference."""
    models = registry.open(lake.open())
    champion = models.alias_version("champion")
    if champion is None:
        return _skip("no champion model yet: nothing to compare with")
    reference = load_reference(models, champion)
    if reference is None:
        return _skip(f"champion version {champion} has no drift reference logged")
    previous = _previous_window_end(lake)
    since = max((t for t in (previous, reference.snapshot_at) if t is not None), default=None)
    current = _new_features(lake, since, config.max_events)
    if current.num_rows < config.min_events:
        return _skip(
            f"{current.num_rows} events with features computed since {since}; a report needs "
            f"{config.min_events}",
            new_events=current.num_rows,
        )
    current_frame = features_frame(
        np.asarray(current.column("features").to_pylist()), SUMMARY_COLUMNS
    )
    reference_frame = reference.features[list(SUMMARY_COLUMNS)].astype(np.float64)
    try:
        result = detect_drift(reference_frame, current_frame, drift_share=config.drift_share)
    except NotEnoughData as exc:
        return _skip(str(exc))
    computed = current.column("computed_at")
    row = report_row(
        result,
        reference_model_version=champion,
        window_start=pc.min(computed).as_py(),
        window_end=pc.max(computed).as_py(),
        html_uri=None,
        created_at=datetime.now(UTC),
    )
    html_uri = lake.save_file(f"{HTML_DIR}/{row['report_id']}.html", result.html, "text/html")
    row["html_uri"] = html_uri
    commit = lake.open().append(
        DRIFT_REPORTS, report_table([row], DRIFT_REPORTS.schema), writer=WRITER
    )
    context.log.info(
        f"drift {result.drifted_columns}/{len(result.columns)} columns "
        f"({result.drifted_share:.0%}); dataset drift: {result.dataset_drift}"
    )
    link = dg.MetadataValue.url(html_uri) if "://" in html_uri else dg.MetadataValue.path(html_uri)
    return dg.MaterializeResult(
        metadata={
            **snapshot_metadata(table_snapshot(lake, DRIFT_REPORTS)),
            "report_id": row["report_id"],
            "dataset_drift": dg.MetadataValue.bool(result.dataset_drift),
            "drift_share": dg.MetadataValue.float(result.drifted_share),
            "drifted_columns": dg.MetadataValue.int(result.drifted_columns),
            "n_current": dg.MetadataValue.int(result.n_current),
            "n_reference": dg.MetadataValue.int(result.n_reference),
            "reference_model_version": champion,
            "evidently_report": link,
            "columns": dg.MetadataValue.md(
                _columns_markdown(result.top_columns(len(result.columns)))
            ),
            "committed_version": commit.version,
        }
    )
