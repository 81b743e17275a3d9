"""The whole code location loads, in every environment, with the graph we expect.

The sorted asset keys (and checks, jobs, schedules, sensors) are snapshotted here: a refactor
that drops or renames an asset fails loudly instead of silently disappearing from the UI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from lake_fixture import LakeEnv, isolated_settings

from orchestration.definitions import build_definitions
from orchestration.resources import LakeResource, S3LakeResource

REPO_ROOT = Path(__file__).resolve().parents[2]

EXPECTED_ASSETS = [
    "analytics/device_daily_activity",
    "analytics/dim_devices",
    "analytics/label_distribution_daily",
    "analytics/model_accuracy_daily",
    "analytics/model_versions",
    "analytics/stg_audio_chunks",
    "analytics/stg_audio_events",
    "analytics/stg_dead_letters",
    "analytics/stg_drift_reports",
    "analytics/stg_model_evaluations",
    "analytics/stg_sessions",
    "analytics/stream_health_daily",
    "bronze/audio_chunks",
    "bronze/dead_letters",
    "gold/audio_features",
    "maintenance/bronze_audio_chunks",
    "maintenance/bronze_dead_letters",
    "maintenance/gold_audio_features",
    "maintenance/monitoring_drift_reports",
    "maintenance/monitoring_model_evaluations",
    "maintenance/silver_audio_events",
    "maintenance/silver_sessions",
    "monitoring/drift_reports",
    "monitoring/model_evaluations",
    "silver/audio_events",
    "silver/sessions",
    "training/candidate_model",
    "training/champion_model",
    "training/model_evaluation",
    "training/training_set",
]

EXPECTED_LAKE_CHECKS = [
    "bronze/audio_chunks:key_columns_not_null",
    "bronze/audio_chunks:primary_key_unique",
    "bronze/audio_chunks:sample_rate_consistent",
    "bronze/audio_chunks:schema_matches_spec",
    "bronze/audio_chunks:sidecar_lag",
    "bronze/dead_letters:key_columns_not_null",
    "bronze/dead_letters:primary_key_unique",
    "bronze/dead_letters:schema_matches_spec",
    "silver/audio_events:events_match_session_format",
    "silver/audio_events:key_columns_not_null",
    "silver/audio_events:primary_key_unique",
    "silver/audio_events:schema_matches_spec",
    "silver/sessions:key_columns_not_null",
    "silver/sessions:primary_key_unique",
    "silver/sessions:schema_matches_spec",
    "training/model_evaluation:promotion_gate",
]


def _repository(settings: object) -> dg.RepositoryDefinition:
    defs = build_definitions(settings)  # type: ignore[arg-type]
    return defs.get_repository_def()


@pytest.mark.parametrize("environment", ["local", "s3"])
def test_code_location_loads_every_definition(empty_env: LakeEnv, environment: str) -> None:
    overrides: dict[str, object] = {"environment": environment}
    if environment == "s3":
        overrides |= {
            "lake_uri": "s3://sonolake-lake/prod",
            "s3_endpoint_url": "http://127.0.0.1:9",
        }
    repo = _repository(isolated_settings(empty_env.root, **overrides))
    graph = repo.asset_graph

    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == EXPECTED_ASSETS
    checks = sorted(
        f"{k.asset_key.to_user_string()}:{k.name}"
        for k in graph.asset_check_keys
        if k.asset_key.path[0] != "analytics"
    )
    assert checks == EXPECTED_LAKE_CHECKS
    dbt_tests = [k for k in graph.asset_check_keys if k.asset_key.path[0] == "analytics"]
    assert len(dbt_tests) >= 30, "dbt tests become asset checks on the analytics models"
    assert sorted(j.name for j in repo.get_all_jobs()) == [
        "__ASSET_JOB",
        "observe_sidecar_tables",
        "retrain",
    ]
    assert sorted(s.name for s in repo.schedule_defs) == [
        "nightly_retrain",
        "observe_sidecar_tables_every_15_minutes",
    ]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "drift_retraining_sensor",
        "sonolake_automation",
    ]
    # every job resolves (selections point at real assets) and the gate is blocking
    for job in repo.get_all_jobs():
        assert job.graph is not None
    gate = next(
        c
        for c in repo.asset_checks_defs_by_key.values()
        if any(k.name == "promotion_gate" for k in c.check_keys)
    )
    assert next(iter(gate.check_specs)).blocking


def test_environment_picks_the_lake_resource(empty_env: LakeEnv) -> None:
    local = build_definitions(isolated_settings(empty_env.root)).resources["lake"]
    assert type(local) is LakeResource
    s3 = build_definitions(
        isolated_settings(empty_env.root, environment="s3", lake_uri="s3://bucket/lake")
    ).resources["lake"]
    assert isinstance(s3, S3LakeResource)
    # secrets are EnvVar references, never values, in the S3 resource's configuration
    secret = s3.s3.model_dump()["aws_secret_access_key"]
    assert isinstance(secret, dg.EnvVar) or "SONOLAKE_AWS_SECRET_ACCESS_KEY" in str(secret)


def test_dagster_definitions_validate(empty_env: LakeEnv) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")} | {
        "SONOLAKE_STATE_DIR": str(empty_env.root / "state"),
        "SONOLAKE_LAKE_URI": str(empty_env.root / "lakehouse"),
        "DAGSTER_HOME": str(empty_env.root / "dagster"),
    }
    (empty_env.root / "dagster").mkdir(parents=True)
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Validation successful" in result.stdout + result.stderr
