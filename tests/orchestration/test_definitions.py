"""The whole code location loads, in every environment, with the graph we expect.

Every asset key and every check key, dbt's included, is snapshotted in ``asset_keys.txt``: a
refactor that drops or renames an asset or a check (or a dbt model or test) fails loudly
instead of silently disappearing from the UI. After an intended change, update the file with

    SONOLAKE_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest tests/orchestration/test_definitions.py

and review its diff like any other change.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from real_lake import LakeEnv, isolated_settings

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, DEAD_LETTERS, PREDICTIONS, SESSIONS
from orchestration import LIFECYCLE, OBSERVE_JOB, RETRAIN_JOB, build_definitions, table_key
from orchestration.keys import ERASE_JOB
from orchestration.resources import LakeResource, S3LakeResource

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("asset_keys.txt")
UPDATE_VARIABLE = "SONOLAKE_UPDATE_SNAPSHOT"


def _repository(settings: object) -> dg.RepositoryDefinition:
    defs = build_definitions(settings)  # type: ignore[arg-type]
    return defs.get_repository_def()


def graph_keys(repo: dg.RepositoryDefinition) -> list[str]:
    """``asset <key>`` and ``check <asset>:<check>`` lines, sorted."""
    graph = repo.asset_graph
    assets = [f"asset {k.to_user_string()}" for k in graph.get_all_asset_keys()]
    checks = [f"check {k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys]
    return sorted(assets) + sorted(checks)


def _environment(environment: str) -> dict[str, object]:
    overrides: dict[str, object] = {"environment": environment}
    if environment == "s3":
        overrides |= {
            "lake_uri": "s3://sonolake-lake/prod",
            "s3_endpoint_url": "http://127.0.0.1:9",
        }
    return overrides


@pytest.mark.parametrize("environment", ["local", "s3"])
def test_code_location_loads_every_definition(empty_env: LakeEnv, environment: str) -> None:
    repo = _repository(isolated_settings(empty_env.root, **_environment(environment)))
    found = graph_keys(repo)
    if os.environ.get(UPDATE_VARIABLE) and environment == "local":
        SNAPSHOT.write_text("\n".join(found) + "\n")
    expected = SNAPSHOT.read_text().splitlines()
    diff = "\n".join(
        difflib.unified_diff(expected, found, "asset_keys.txt", "code location", lineterm="")
    )
    assert found == expected, (
        f"the asset graph changed ({environment}):\n{diff}\n"
        f"if that is intended, run `{UPDATE_VARIABLE}=1 .venv/bin/python -m pytest "
        "tests/orchestration/test_definitions.py` and commit asset_keys.txt"
    )
    assert sum(line.startswith("check analytics/") for line in found) >= 30, (
        "dbt tests become asset checks on the analytics models"
    )

    assert sorted(j.name for j in repo.get_all_jobs()) == sorted(
        ["__ASSET_JOB", ERASE_JOB, OBSERVE_JOB, RETRAIN_JOB]
    )
    jobs = {
        RETRAIN_JOB: set(LIFECYCLE),
        OBSERVE_JOB: {
            table_key(s) for s in (AUDIO_CHUNKS, DEAD_LETTERS, AUDIO_EVENTS, SESSIONS, PREDICTIONS)
        },
    }
    for name, keys in jobs.items():
        assert repo.get_job(name).asset_layer.selected_asset_keys == keys, name
    assert sorted(s.name for s in repo.schedule_defs) == [
        "nightly_retrain",
        "observe_sidecar_tables_every_15_minutes",
    ]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "drift_retraining_sensor",
        "sonolake_automation",
    ]
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
