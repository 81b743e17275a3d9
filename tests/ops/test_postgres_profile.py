"""The ``postgres`` environment end to end: Dagster runs and events in Postgres, MLflow's
backend store in Postgres, artifacts and the lake on S3 (moto's server), and a real
retraining run with a promotion.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from postgres_server import postgres_bin, postgres_server
from real_lake import isolated_settings, land_clips, small_lake_clips
from support import (
    MOTO_KEY_ID,
    MOTO_SECRET,
    REPO_ROOT,
    moto_client,
    moto_server,
)

from lake_schemas import AUDIO_EVENTS, MODEL_EVALUATIONS
from models.registry import CHAMPION
from orchestration import CANDIDATE_MODEL, RETRAIN_JOB, prepare_dagster_home
from sonolake import wiring

sys.path.insert(0, str(REPO_ROOT / "tests" / "orchestration"))
from materialize import run_assets

BUCKET = "sonolake-profile"
KEY_ID, SECRET = MOTO_KEY_ID, MOTO_SECRET
RUN_CONFIG = {
    "ops": {CANDIDATE_MODEL.to_python_identifier(): {"config": {"epochs": 4, "light_timing": True}}}
}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL not installed: make ops-tools"),
]


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with moto_server(tmp_path, BUCKET) as endpoint:
        monkeypatch.setenv("SONOLAKE_AWS_ACCESS_KEY_ID", KEY_ID)
        monkeypatch.setenv("SONOLAKE_AWS_SECRET_ACCESS_KEY", SECRET)
        yield endpoint


def _profile_settings(url: str, moto: str, tmp_path: Path, **overrides: Any) -> Any:
    return isolated_settings(
        tmp_path,
        environment="postgres",
        lake_uri=f"s3://{BUCKET}/lake",
        s3_endpoint_url=moto,
        aws_allow_http=True,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        s3_sse="AES256",
        mlflow_uri=f"{url}/mlflow",
        mlflow_artifacts_uri=f"s3://{BUCKET}/mlflow",
        dagster_postgres_url=f"{url}/dagster",
        **overrides,
    )


def test_dagster_and_mlflow_keep_their_state_in_postgres(
    moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The short version `make test` runs: a Dagster run recorded in Postgres, and an MLflow
    run whose metadata is in Postgres and whose artifact is on S3."""
    with postgres_server(["dagster", "mlflow"]) as url:
        monkeypatch.setenv("SONOLAKE_DAGSTER_POSTGRES_URL", f"{url}/dagster")
        settings = _profile_settings(url, moto, tmp_path)
        home = prepare_dagster_home(settings)

        @dg.asset
        def probe() -> int:
            return 1

        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            run = dg.materialize([probe], instance=instance)
            assert run.success
        with dg.DagsterInstance.from_config(str(home)) as again:  # another process would see it
            stored = again.get_run_by_id(run.run_id)
            assert stored is not None and stored.is_success

        import mlflow

        for name, value in wiring.settings_mlflow_environment(settings).items():
            monkeypatch.setenv(name, value)
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        experiment = mlflow.create_experiment("probe", artifact_location=f"s3://{BUCKET}/mlflow")
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_text("weights", "model/probe.txt")
        assert _count(f"{url}/mlflow", "experiments") >= 1
        assert _s3_keys(moto, "mlflow/")


@pytest.mark.profile
def test_retrain_and_promote_on_the_postgres_profile(
    moto: str, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with postgres_server(["dagster", "mlflow"]) as url:
        monkeypatch.setenv("SONOLAKE_DAGSTER_POSTGRES_URL", f"{url}/dagster")
        settings = _profile_settings(
            url, moto, tmp_path, promotion_accuracy_floor=0.0, promotion_latency_budget_us=1e6
        )
        lake = land_clips(
            settings,
            small_lake_clips(
                shared_data, train_speakers=8, heldout_speakers=2, per_speaker=8, silence_clips=4
            ),
        )
        home = prepare_dagster_home(settings)
        assert "postgres_url" in (home / "dagster.yaml").read_text()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            days = {d.isoformat() for d in lake.read(AUDIO_EVENTS).column("event_date").to_pylist()}
            for day in sorted(days):
                assert run_assets(
                    settings, instance, ["gold/audio_features"], partition_key=day
                ).success
            run = run_assets(settings, instance, [], job_name=RETRAIN_JOB, run_config=RUN_CONFIG)
            assert run.success
            stored = instance.get_run_by_id(run.run_id)
            assert stored is not None and stored.is_success

        registry = wiring.registry(settings)
        champion = registry.alias_version(CHAMPION)
        assert champion is not None
        actions = lake.read(MODEL_EVALUATIONS, columns=["model_version", "action"]).to_pylist()
        assert {"model_version": champion, "action": "promote"} in actions
        assert _count(f"{url}/mlflow", "model_versions") > 0, "MLflow's store is Postgres"
        assert _s3_keys(moto, "mlflow/"), "artifacts are on S3"


def _count(url: str, table: str) -> int:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(sqlalchemy.text(f"select count(*) from {table}")).scalar() or 0
            )
    finally:
        engine.dispose()


def _s3_keys(endpoint: str, prefix: str) -> list[Any]:
    return moto_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
