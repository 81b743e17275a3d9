"""The asset graph end to end on real recordings, in process.

Speech Commands clips landed by the real sidecar → features → training set → candidate (quick
preset) → evaluation → blocking gate → champion. Then 8 kHz telephone digits (FSDD, mu-law)
arrive: a real change of channel and vocabulary. The drift report finds it, the sensor asks
for retraining, and the requested run trains a new candidate that the (deliberately strict)
gate refuses, so the champion alias stays where it was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from materialize import check_results, metadata_of, run_assets
from real_lake import LakeEnv, fsdd_clips, isolated_settings, land_clips

from lake_schemas import AUDIO_EVENTS, DRIFT_REPORTS, MODEL_EVALUATIONS, Lake
from models.drift_reference import load_reference
from models.registry import CHALLENGER, CHAMPION
from orchestration import CANDIDATE_MODEL, CHAMPION_MODEL, MODEL_EVALUATION, RETRAIN_JOB
from orchestration.defs.monitoring.sensors import BEGINNING, REPORT_TAG, drift_retraining_sensor
from orchestration.resources import LakeResource
from sonolake import wiring

TRAINING_RUN_CONFIG = {
    "ops": {CANDIDATE_MODEL.to_python_identifier(): {"config": {"epochs": 6, "light_timing": True}}}
}


def _feature_partitions(settings: object, instance: dg.DagsterInstance, lake: Lake) -> None:
    days = sorted(
        {
            d.isoformat()
            for d in lake.read(AUDIO_EVENTS, columns=["event_date"]).column(0).to_pylist()
        }
    )
    for day in days:
        assert run_assets(settings, instance, ["gold/audio_features"], partition_key=day).success  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.slow
def test_train_promote_then_drift_triggers_a_gated_retraining(
    small_lake: LakeEnv, shared_data: Path, tmp_path: Path
) -> None:
    # the gate's thresholds are policy: generous for the first champion (a quick model on ~100
    # clips), impossible for the retraining, so the test sees the gate pass and then refuse
    lenient = isolated_settings(
        small_lake.root, promotion_accuracy_floor=0.0, promotion_latency_budget_us=1e6
    )
    strict = isolated_settings(
        small_lake.root, promotion_min_improvement=1.0, promotion_latency_budget_us=1e6
    )
    lake = wiring.lake(lenient)
    registry = wiring.registry(lenient, lake)
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        _feature_partitions(lenient, instance, lake)
        first = run_assets(
            lenient, instance, [], job_name=RETRAIN_JOB, run_config=TRAINING_RUN_CONFIG
        )
        assert first.success
        assert check_results(first)["training/model_evaluation:promotion_gate"].passed
        candidate = metadata_of(first, CANDIDATE_MODEL)
        version = candidate["model_version"]
        assert registry.alias_version(CHAMPION) == version
        assert metadata_of(first, CHAMPION_MODEL)["champion_version"] == version
        run_id = registry.client.get_model_version(registry.model_name, version).run_id
        curves = {
            name: [p.step for p in registry.client.get_metric_history(run_id, name)]
            for name in ("train_loss", "train_accuracy", "heldout_accuracy")
        }
        assert curves == {name: list(range(1, 7)) for name in curves}, "one point per epoch"
        evaluation = metadata_of(first, MODEL_EVALUATION)
        assert 0.0 <= evaluation["accuracy"] <= 1.0 and evaluation["latency_us_p99"] > 0
        assert (
            candidate["mlflow_run"].startswith("http")
            and "data:image/png" in candidate["confusion_matrix"]
        )
        reference = load_reference(registry, version)
        assert reference is not None and len(reference.features) > 30
        actions = lake.read(MODEL_EVALUATIONS, columns=["model_version", "action"]).to_pylist()
        assert {"model_version": version, "action": "promote"} in actions

        # a new channel arrives: telephone digits, 8 kHz mu-law
        land_clips(
            lenient,
            fsdd_clips(shared_data, per_speaker=10),
            encoding="mulaw",
            start=datetime.now(UTC),
        )
        _feature_partitions(lenient, instance, lake)
        drift = run_assets(lenient, instance, ["monitoring/drift_reports"])
        report = metadata_of(drift, "monitoring/drift_reports")
        assert report["dataset_drift"] is True, report
        assert report["drift_share"] >= 0.5 and report["reference_model_version"] == version
        stored = Path(report["evidently_report_file"]).read_bytes()
        assert stored.lstrip().startswith(b"<!DOCTYPE html>")
        # one click from the UI: the MLflow copy, on the champion's run, under the UI base URL
        run_id = registry.client.get_model_version(registry.model_name, version).run_id
        link = report["evidently_report"]
        assert link.startswith(lenient.mlflow_ui_url) and f"/runs/{run_id}/artifactPath/" in link
        artifact = link.split("/artifactPath/")[1]
        logged = registry.client.download_artifacts(run_id, artifact, str(tmp_path))
        assert Path(logged).read_bytes() == stored
        assert lake.read(DRIFT_REPORTS).num_rows == 1

        resource = LakeResource(root=lenient.lake_root)
        with dg.build_sensor_context(cursor=BEGINNING, resources={"lake": resource}) as context:
            sensed = drift_retraining_sensor(context)
        assert isinstance(sensed, dg.SensorResult) and len(sensed.run_requests) == 1
        request = sensed.run_requests[0]
        assert request.tags[REPORT_TAG] == report["report_id"]

        retrain = run_assets(
            strict,
            instance,
            [],
            job_name=RETRAIN_JOB,
            run_config=TRAINING_RUN_CONFIG,
            tags=request.tags,
            raise_on_error=False,
        )
        gate = check_results(retrain)["training/model_evaluation:promotion_gate"]
        assert not gate.passed
        new_version = metadata_of(retrain, CANDIDATE_MODEL)["model_version"]
        assert new_version != version
        assert not metadata_of(retrain, CHAMPION_MODEL), "blocked by the gate"
        assert registry.alias_version(CHAMPION) == version, "the champion alias did not move"
        assert registry.alias_version(CHALLENGER) == new_version
        actions = lake.read(MODEL_EVALUATIONS, columns=["model_version", "action"]).to_pylist()
        assert {"model_version": new_version, "action": "reject"} in actions
