"""Detected drift becomes a retraining run.

The sensor reads ``monitoring.drift_reports`` (the lake, not Dagster's event log, so a report
written by any process counts). Its cursor is the creation time of the newest report it has
seen; each evaluation looks only at newer reports and, when one of them found dataset drift,
requests one ``retrain`` run keyed by that report (a report never triggers twice, and a burst
of drifted reports triggers one run, for the newest).

A sensor that starts without a cursor over a lake that already has reports does not act on
that history: it takes the newest report as its starting point (otherwise turning the sensor
on, or opening a fresh ``dagster dev``, would retrain for a drift already handled). Over a
lake with no report yet it starts from the beginning of time, so the first report counts.
"""

from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas.tables import DRIFT_REPORTS
from orchestration.defs.training.jobs import retrain_job
from orchestration.resources import LakeResource

TRIGGER_TAG = "sonolake/trigger"
REPORT_TAG = "sonolake/drift_report"
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC).isoformat()
"""Cursor of a sensor that has seen an empty lake: every report from now on is new."""
REPORT_COLUMNS = [
    "report_id",
    "created_at",
    "dataset_drift",
    "drift_share",
    "reference_model_version",
]


def reports_after(lake: LakeResource, cursor: str | None) -> pa.Table:
    """Drift reports created after the cursor (an ISO time), oldest first."""
    opened = lake.open()
    if not opened.exists(DRIFT_REPORTS):
        return DRIFT_REPORTS.schema.empty_table().select(REPORT_COLUMNS)
    flt = None
    if cursor:
        after = pa.scalar(datetime.fromisoformat(cursor), pa.timestamp("us", tz="UTC"))
        flt = pc.field("created_at") > after
    reports = opened.read(DRIFT_REPORTS, columns=REPORT_COLUMNS, filter=flt)
    return reports.sort_by("created_at")


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a retraining run when a new drift report found dataset drift.",
)
def drift_retraining_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    reports = reports_after(lake, context.cursor)
    if reports.num_rows == 0:
        if context.cursor is None:
            return dg.SensorResult(skip_reason="no drift report yet", cursor=BEGINNING)
        return dg.SkipReason("no new drift report")
    newest = reports.column("created_at")[-1].as_py().isoformat()
    if context.cursor is None:
        return dg.SensorResult(
            skip_reason=f"starting after the {reports.num_rows} existing report(s)", cursor=newest
        )
    drifted = reports.filter(pc.field("dataset_drift"))
    if drifted.num_rows == 0:
        return dg.SensorResult(
            skip_reason=f"{reports.num_rows} new drift report(s), none found dataset drift",
            cursor=newest,
        )
    report = drifted.slice(drifted.num_rows - 1).to_pylist()[0]
    context.log.info(
        f"drift report {report['report_id']}: {report['drift_share']:.0%} of features drifted "
        f"against champion {report['reference_model_version']}; requesting retraining"
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{report['report_id']}",
                tags={TRIGGER_TAG: "drift", REPORT_TAG: report["report_id"]},
            )
        ],
        cursor=newest,
    )
