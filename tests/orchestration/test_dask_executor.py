"""Dagster on a real Dask cluster: the feature and training jobs, their steps on the workers.

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
from models.registry import CHAMPION
from orchestration import CANDIDATE_MODEL, CHAMPION_MODEL, RETRAIN_JOB, build_definitions
from sonolake import wiring
from sonolake.errors import BadInput
from sonolake.settings import get_settings

pytestmark = pytest.mark.integration

FEATURES = dg.AssetKey(["gold", "audio_features"])
TRAINING_RUN_CONFIG = {
    "ops": {CANDIDATE_MODEL.to_python_identifier(): {"config": {"epochs": 6, "light_timing": True}}}
}


def _environment(lake: LakeEnv) -> dict[str, str]:
    settings = lake.settings
    return {
        "SONOLAKE_STATE_DIR": str(settings.state_path),
        "SONOLAKE_LAKE_URI": settings.lake_uri,
        "SONOLAKE_DATA_DIR": str(settings.data_dir),
        "SONOLAKE_MLFLOW_URI": settings.mlflow_tracking_uri,
        "SONOLAKE_TRAINING_PRESET": "quick",
        "SONOLAKE_DAGSTER_EXECUTOR": "dask",
        # the gate's policy for a first champion from a quick model on ~100 clips
        "SONOLAKE_PROMOTION_ACCURACY_FLOOR": "0.0",
        "SONOLAKE_PROMOTION_LATENCY_BUDGET_US": "1000000",
    }


def test_dask_executor_needs_a_scheduler(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    settings.dagster_executor = "dask"
    with pytest.raises(BadInput, match="SONOLAKE_DASK_SCHEDULER"):
        build_definitions(settings)


def _steps(result: dg.ExecuteJobResult) -> list[dg.DagsterEvent]:
    assert result.success
    return [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]


@pytest.mark.dask
def test_feature_and_training_steps_run_on_dask_workers(
    small_lake: LakeEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every feature partition, then the retraining job (training set → candidate →
    evaluation and gate → champion), each step a task on the cluster's worker processes."""
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
    days = sorted({d.isoformat() for d in events.column("event_date").to_pylist()})

    location = ReconstructableRepository.for_module(
        "orchestration.definitions", "defs", working_directory=str(REPO_ROOT)
    )
    steps: list[dg.DagsterEvent] = []
    try:
        cluster.start()
        before = cluster.executed_counts()
        (tmp_path / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            for day in days:
                steps += _steps(
                    dg.execute_job(
                        location.get_reconstructable_job("__ASSET_JOB"),
                        instance=instance,
                        asset_selection=[FEATURES],
                        tags={"dagster/partition": day},
                    )
                )
            retrain = dg.execute_job(
                location.get_reconstructable_job(RETRAIN_JOB),
                instance=instance,
                run_config=TRAINING_RUN_CONFIG,
            )
            steps += _steps(retrain)
            trained = {
                e.asset_key
                for e in retrain.all_events
                if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            }
        after = cluster.executed_counts()
        workers = {w.pid for w in cluster.workers}
    finally:
        cluster.stop()
    pids = {e.pid for e in steps}
    assert pids <= workers and os.getpid() not in pids, (pids, workers)
    assert sum(after.values()) - sum(before.values()) == len(steps)
    assert len(steps) >= len(days) + 4
    assert {CANDIDATE_MODEL, CHAMPION_MODEL} <= trained
    assert lake.read(AUDIO_FEATURES).num_rows == events.num_rows
    assert wiring.registry(settings, lake).alias_version(CHAMPION) is not None
