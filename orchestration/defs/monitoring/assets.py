"""monitoring.drift_reports: recent events' features against the champion's training reference.

What is compared is decided by :func:`models.drift_monitor.compare_with_champion` (the events
whose features were computed since the previous report, against the champion's reference).
The Evidently HTML is stored in the lake beside the tables
(``monitoring/drift_html/<report_id>.html``, the table row's ``html_uri``) and attached to the
champion's MLflow run (``drift_reports/<report_id>.html``); the asset's metadata links the
MLflow copy (``evidently_report``: one click from the Dagster UI, under
``SONOLAKE_MLFLOW_UI_URL``) and names the lake's (``evidently_report_file``). The verdict lands
as one row in the table, which the retraining sensor watches.
"""

from datetime import timedelta

import dagster as dg

from lake_schemas.tables import AUDIO_FEATURES, DRIFT_REPORTS, MODEL_EVALUATIONS
from models.drift import DEFAULT_DRIFT_SHARE, MIN_ROWS, ColumnDrift, report_table
from models.drift_monitor import NoComparison, compare_with_champion
from models.drift_reference import log_drift_report
from orchestration.keys import CHAMPION_MODEL, MODEL_EVALUATION, table_key, writer_pool
from orchestration.lake_metadata import snapshot_metadata, table_definition_metadata
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


def _skip(reason: str, **extra: int | str) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"skipped": reason, **extra})


def _columns_markdown(columns: list[ColumnDrift]) -> str:
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
    pool=writer_pool(DRIFT_REPORTS),
)
def drift_reports(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """Compare the events since the last report with the champion's training reference."""
    opened = lake.open()
    models = registry.open(opened)
    found = compare_with_champion(
        opened,
        models,
        drift_share=config.drift_share,
        min_events=config.min_events,
        max_events=config.max_events,
    )
    if isinstance(found, NoComparison):
        extra = {} if found.new_events is None else {"new_events": found.new_events}
        return dg.MaterializeResult(metadata={"skipped": found.reason, **extra})
    result, row, champion = found.result, found.row, found.champion
    html_uri = lake.save_file(f"{HTML_DIR}/{row['report_id']}.html", result.html, "text/html")
    row["html_uri"] = html_uri
    commit = opened.append(DRIFT_REPORTS, report_table([row], DRIFT_REPORTS.schema), writer=WRITER)
    context.log.info(
        f"drift {result.drifted_columns}/{len(result.columns)} columns "
        f"({result.drifted_share:.0%}); dataset drift: {result.dataset_drift}"
    )
    logged = log_drift_report(models, champion, row["report_id"], result.html)
    stored = (
        dg.MetadataValue.url(html_uri) if "://" in html_uri else dg.MetadataValue.path(html_uri)
    )
    return dg.MaterializeResult(
        metadata={
            **snapshot_metadata(opened.table_snapshot(DRIFT_REPORTS)),
            "report_id": row["report_id"],
            "dataset_drift": dg.MetadataValue.bool(result.dataset_drift),
            "drift_share": dg.MetadataValue.float(result.drifted_share),
            "drifted_columns": dg.MetadataValue.int(result.drifted_columns),
            "n_current": dg.MetadataValue.int(result.n_current),
            "n_reference": dg.MetadataValue.int(result.n_reference),
            "reference_model_version": champion,
            "evidently_report": dg.MetadataValue.url(
                registry.artifact_url(logged.experiment_id, logged.run_id, logged.artifact_path)
            ),
            "evidently_report_file": stored,
            "columns": dg.MetadataValue.md(
                _columns_markdown(result.top_columns(len(result.columns)))
            ),
            "committed_version": commit.version,
        }
    )
