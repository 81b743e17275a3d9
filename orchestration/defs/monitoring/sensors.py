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
import pyarrow.compute as pc

from models.drift_monitor import reports_after
from orchestration.defs.training.jobs import retrain_job
from orchestration.keys import DRIFT_SENSOR, TRIGGER_TAG
from orchestration.resources import LakeResource

REPORT_TAG = "sonolake/drift_report"
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC).isoformat()
"""Cursor of a sensor that has seen an empty lake: every report from now on is new."""


@dg.sensor(
    name=DRIFT_SENSOR,
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a retraining run when a new drift report found dataset drift.",
)
def drift_retraining_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    after = datetime.fromisoformat(context.cursor) if context.cursor else None
    reports = reports_after(lake.open(), after)
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
