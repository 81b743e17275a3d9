"""Dagster on a real Dask cluster: a feature materialization whose step runs on the workers.

A scheduler and two workers are started here (stopped by PID). The workers get the same
``SONOLAKE_*`` environment as the run, load the code location themselves, and write their
events to the run's persistent instance; the step's events must carry a worker's PID.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dask_cluster import DaskCluster
from real_lake import LakeEnv
from support import REPO_ROOT

from lake_schemas import AUDIO_EVENTS, AUDIO_FEATURES
from orchestration import build_definitions
from sonolake import wiring
from sonolake.errors import BadInput
from sonolake.settings import get_settings

pytestmark = pytest.mark.integration

FEATURES = dg.AssetKey(["gold", "audio_features"])


def _environment(lake: LakeEnv) -> dict[str, str]:
    settings = lake.settings
    return {
        "SONOLAKE_STATE_DIR": str(settings.state_path),
        "SONOLAKE_LAKE_URI": settings.lake_uri,
        "SONOLAKE_DATA_DIR": str(settings.data_dir),
        "SONOLAKE_MLFLOW_URI": settings.mlflow_tracking_uri,
        "SONOLAKE_TRAINING_PRESET": "quick",
        "SONOLAKE_DAGSTER_EXECUTOR": "dask",
    }


def test_dask_executor_needs_a_scheduler(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    settings.dagster_executor = "dask"
    with pytest.raises(BadInput, match="SONOLAKE_DASK_SCHEDULER"):
        build_definitions(settings)


@pytest.mark.dask
def test_feature_step_runs_on_a_dask_worker(
    small_lake: LakeEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _environment(small_lake)
    cluster = DaskCluster(tmp_path / "dask", workers=2, pycache=tmp_path / "pycache")
    env["SONOLAKE_DASK_SCHEDULER"] = cluster.address
    cluster.env |= env
    for name in list(os.environ):
        if name.startswith("SONOLAKE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = get_settings()
    lake = wiring.lake(settings)
    events = lake.read(AUDIO_EVENTS)
    day = sorted({d.isoformat() for d in events.column("event_date").to_pylist()})[0]
    expected = sum(1 for d in events.column("event_date").to_pylist() if d.isoformat() == day)

    job = ReconstructableRepository.for_module(
        "orchestration.definitions", "defs", working_directory=str(REPO_ROOT)
    ).get_reconstructable_job("__ASSET_JOB")
    try:
        cluster.start()
        before = cluster.executed_counts()
        (tmp_path / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            result = dg.execute_job(
                job,
                instance=instance,
                asset_selection=[FEATURES],
                tags={"dagster/partition": day},
            )
            assert result.success
            started = [
                e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START
            ]
            materialized = [
                e.asset_key
                for e in result.all_events
                if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            ]
        after = cluster.executed_counts()
        workers = {w.pid for w in cluster.workers}
    finally:
        cluster.stop()
    assert started and {e.pid for e in started} <= workers, (started, workers)
    assert os.getpid() not in {e.pid for e in started}
    assert FEATURES in materialized
    assert sum(after.values()) - sum(before.values()) == len(started)
    features = lake.read(AUDIO_FEATURES)
    assert features.num_rows == expected
