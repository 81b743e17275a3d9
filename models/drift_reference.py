"""The champion's drift reference: the summary features of the events it was trained on.

Drift is measured against what the *serving* model saw in training, so the reference travels
with the model: training from the lake logs the training events' feature vectors as a Parquet
artifact of the model's MLflow run (``drift_reference/features.parquet``), and tags the run
with the time the training set was taken from the lake. Features computed after that time
belong to events the model never saw. (Processing time, not event time: event times come
from the devices' stream clocks, and a replay faster than real time stamps them in the future.)
The drift report fetches the champion's reference by the champion alias, whichever version
that is today.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from models.registry import Registry

REFERENCE_DIR = "drift_reference"
REFERENCE_FILE = "features.parquet"
SNAPSHOT_TAG = "sonolake.training_snapshot_at"
"""Run tag: ISO time the training set was read from the lake (features computed later are new)."""


@dataclass(frozen=True)
class DriftReference:
    model_version: str
    features: pd.DataFrame
    snapshot_at: datetime | None


def _run_id(registry: Registry, version: str) -> str:
    run_id = registry.client.get_model_version(registry.model_name, version).run_id
    if not run_id:
        raise ValueError(f"version {version} of {registry.model_name} has no MLflow run")
    return str(run_id)


def log_reference(
    registry: Registry, version: str, features: pa.Table, snapshot_at: datetime | None
) -> None:
    """Attach the training events' features (columns = SUMMARY_COLUMNS) to a version's run."""
    client = registry.client
    run_id = _run_id(registry, version)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / REFERENCE_FILE
        pq.write_table(features, path)
        client.log_artifact(run_id, str(path), REFERENCE_DIR)
    if snapshot_at is not None:
        client.set_tag(run_id, SNAPSHOT_TAG, snapshot_at.isoformat())


def load_reference(registry: Registry, version: str) -> DriftReference | None:
    """The reference of a registered version, or None when its run has none."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = registry.client
    run_id = _run_id(registry, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = download_artifacts(
                run_id=run_id,
                artifact_path=f"{REFERENCE_DIR}/{REFERENCE_FILE}",
                dst_path=tmp,
                tracking_uri=registry.tracking_uri,
            )
        except (MlflowException, OSError):
            return None
        frame = pq.read_table(local).to_pandas()
    tag = client.get_run(run_id).data.tags.get(SNAPSHOT_TAG)
    return DriftReference(version, frame, datetime.fromisoformat(tag) if tag else None)


REPORTS_DIR = "drift_reports"
"""Run artifact folder of the Evidently reports made against a version's reference."""


@dataclass(frozen=True)
class LoggedReport:
    """Where a drift report sits in MLflow: the reference model's run and the artifact path."""

    experiment_id: str
    run_id: str
    artifact_path: str


def log_drift_report(registry: Registry, version: str, report_id: str, html: bytes) -> LoggedReport:
    """Attach an Evidently HTML report to the run of the version whose reference it used.

    The MLflow UI previews HTML artifacts, so the report opens with one click from a link to
    the run's artifact (the Dagster asset's metadata carries that link).
    """
    client = registry.client
    run_id = _run_id(registry, version)
    name = f"{report_id}.html"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(html)
        client.log_artifact(run_id, str(path), REPORTS_DIR)
    experiment_id = str(client.get_run(run_id).info.experiment_id)
    return LoggedReport(experiment_id, run_id, f"{REPORTS_DIR}/{name}")
