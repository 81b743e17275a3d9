"""Settings: env prefix, derived locations, storage options for local and S3 lakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonolake.settings import Settings


def test_defaults_run_locally(settings: Settings, tmp_path: Path) -> None:
    assert settings.environment == "local"
    assert not settings.is_remote_lake
    assert settings.lake_root == str(tmp_path / "lakehouse")
    assert settings.catalog_file == tmp_path / "lakehouse" / "catalog.duckdb"
    assert settings.spool_path == tmp_path / "state" / "spool"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    assert settings.storage_options() == {}


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
    assert s.catalog_file == tmp_path / "catalog.duckdb"
    assert s.storage_options() == {
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
