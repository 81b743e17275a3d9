"""Settings: env prefix, derived locations; the wiring's storage options and catalog file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from support import REPO_ROOT

from models.training import PRESETS
from sonolake import wiring
from sonolake.settings import BadSettings, Settings, get_settings


def test_defaults_run_locally(settings: Settings, tmp_path: Path) -> None:
    assert settings.environment == "local"
    assert not settings.is_remote_lake
    assert settings.lake_root == str(tmp_path / "lakehouse")
    assert wiring.lake(settings).catalog_file == tmp_path / "lakehouse" / "catalog.duckdb"
    assert settings.spool_path == tmp_path / "state" / "spool"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    assert wiring.storage_options(settings) == {}
    assert wiring.registry(settings).cache_dir == tmp_path / "state" / "model-cache"


def test_tokens_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONOLAKE_AUTH_TOKENS", " alpha, beta ,,")
    assert Settings(_env_file=None).auth_tokens == ["alpha", "beta"]


def test_s3_lake_storage_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SONOLAKE_LAKE_URI", "s3://bucket/lake/")
    monkeypatch.setenv("SONOLAKE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SONOLAKE_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("SONOLAKE_AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("SONOLAKE_AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("SONOLAKE_AWS_ALLOW_HTTP", "true")
    s = Settings(_env_file=None)
    assert s.is_remote_lake
    assert s.lake_root == "s3://bucket/lake"
    assert wiring.lake(s).catalog_file is None, "an S3 lake has no catalog file"
    assert wiring.storage_options(s) == {
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_ALLOW_HTTP": "true",
    }
    assert "'secret'" not in repr(s)


def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONOLAKE_GATEWAY_PORT", "not-a-port")
    with pytest.raises(ValueError, match="gateway_port"):
        Settings(_env_file=None)


def test_training_presets_are_the_settings_choices() -> None:
    """The setting's allowed values (checked before anything loads JAX) are the presets."""
    assert set(get_args(Settings.model_fields["training_preset"].annotation)) == set(PRESETS)


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONOLAKE_GATEWAY_PORT", "abc")
    monkeypatch.setenv("SONOLAKE_TRAINING_PRESET", "bogus")
    with pytest.raises(BadSettings) as raised:
        get_settings(_env_file=None)
    lines = sorted(str(raised.value).splitlines())
    assert len(lines) == 2
    assert lines[0].startswith("SONOLAKE_GATEWAY_PORT='abc' is not allowed")
    assert lines[1].startswith("SONOLAKE_TRAINING_PRESET='bogus' is not allowed")


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("SONOLAKE_TRAINING_PRESET", "bogus", "'full' or 'embedding'"),
        ("SONOLAKE_GATEWAY_PORT", "abc", "valid integer"),
        ("SONOLAKE_GATEWAY_PORT", "70000", "less than or equal to 65535"),
        ("SONOLAKE_ALLOW_ANONYMOUS_LOOPBACK", "maybe", "valid boolean"),
    ],
)
def test_a_bad_setting_stops_the_cli_with_one_line(
    settings: Settings, variable: str, value: str, allowed: str
) -> None:
    """Through the real command line: exit code 2, one line naming the variable, the value and
    what is allowed; no traceback."""
    env = {k: v for k, v in __import__("os").environ.items()} | {variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "sonolake", "config"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    err = " ".join(result.stderr.split())
    assert f"{variable}={value!r} is not allowed" in err and allowed in err, err
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_secrets_are_not_echoed_in_errors(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SONOLAKE_AUTH_TOKENS", "s3cr3t-token")
    monkeypatch.setenv("SONOLAKE_GATEWAY_PORT", "abc")
    with pytest.raises(BadSettings) as raised:
        get_settings(_env_file=None)
    assert "s3cr3t" not in str(raised.value)
