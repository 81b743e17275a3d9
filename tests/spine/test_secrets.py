"""Secrets are never printed: `sonolake config`, settings errors, log lines and tracebacks."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from support import REPO_ROOT

from sonolake import secrets

TOKENS = ("tok-alpha-5f2c9e", "tok-beta-81d04a")
KEY_ID = "AKIAEXAMPLE7Q3Z"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
DB_PASSWORD = "pa55-w0rd-xyz"
SECRET_ENV = {
    "SONOLAKE_AUTH_TOKENS": ",".join(TOKENS),
    "SONOLAKE_AWS_ACCESS_KEY_ID": KEY_ID,
    "SONOLAKE_AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "SONOLAKE_MLFLOW_URI": f"postgresql://mlflow:{DB_PASSWORD}@db.internal:5432/mlflow",
}
EVERY_SECRET = (*TOKENS, KEY_ID, SECRET_KEY, DB_PASSWORD)


def _sonolake(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SONOLAKE_")}
    clean.update(SONOLAKE_STATE_DIR=str(tmp_path / "state"), COLUMNS="200", **env)
    clean["SONOLAKE_LAKE_URI"] = str(tmp_path / "lake")
    return subprocess.run(
        [sys.executable, "-m", "sonolake", *args],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_no_secret(text: str) -> None:
    leaked = [s for s in EVERY_SECRET if s in text]
    assert not leaked, f"printed secrets: {leaked}"


def test_config_masks_tokens_keys_and_uri_passwords(tmp_path: Path) -> None:
    proc = _sonolake(tmp_path, "config", **SECRET_ENV)
    assert proc.returncode == 0, proc.stderr
    _assert_no_secret(proc.stdout + proc.stderr)
    lines = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if "│" in line}
    assert "[***, ***]" in lines["auth_tokens"], "how many tokens, never which"
    assert "***" in lines["aws_access_key_id"] and "***" in lines["aws_secret_access_key"]
    assert "postgresql://mlflow:***@db.internal:5432/mlflow" in lines["mlflow_uri"]
    assert "postgresql://mlflow:***@db.internal" in lines["-> mlflow_tracking_uri"]


def test_a_bad_setting_is_reported_without_the_secrets_around_it(tmp_path: Path) -> None:
    proc = _sonolake(
        tmp_path,
        "config",
        SONOLAKE_GATEWAY_PORT="not-a-port",
        SONOLAKE_ENVIRONMENT=f"s3://user:{DB_PASSWORD}@bucket",
        **SECRET_ENV,
    )
    assert proc.returncode == 2
    assert "SONOLAKE_GATEWAY_PORT='not-a-port'" in proc.stderr
    assert "SONOLAKE_ENVIRONMENT='s3://user:***@bucket'" in proc.stderr
    _assert_no_secret(proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:secretpw@db/x", "postgresql://u:***@db/x"),
        ("s3://AKIA:abc/def@bucket/lake", "s3://AKIA:***@bucket/lake"),
        ("ws://127.0.0.1:8765/v1/listen?device_id=d&token=abcd1234", "…&token=***"),
        ("GET /v1/listen?token=abcd1234&device_id=d", "?token=***&device_id=d"),
        ("/v1/listen?device_id=d&resume_token=r3sume-s3cret", "&resume_token=***"),
        ("{'Authorization': 'Token abcd1234'}", "'Authorization': 'Token ***'"),
        ("http://127.0.0.1:9000/bucket", "http://127.0.0.1:9000/bucket"),
        ("token bucket of 2 audio-seconds; key=(session_id, seq)", "unchanged"),
    ],
)
def test_mask_text_hides_embedded_credentials(text: str, expected: str) -> None:
    masked = secrets.mask_text(text)
    if expected == "unchanged":
        assert masked == text
    else:
        assert expected.removeprefix("…") in masked
        assert "secretpw" not in masked and "abcd1234" not in masked and "s3cret" not in masked


def test_secret_settings_are_masked_by_name_and_type() -> None:
    assert secrets.masked_setting("auth_tokens", ["a-token", "b-token"]) == "[***, ***]"
    assert secrets.masked_setting("auth_tokens", []) == "[]", "no tokens is worth saying"
    assert secrets.masked_setting("gateway_metrics_token", "m3trics-token") == "***"
    assert secrets.masked_setting("anything", SecretStr("hidden-value")) == "***"
    assert secrets.masked_setting("aws_secret_access_key", None) == "None"
    assert secrets.masked_setting("gateway_port", 8765) == "8765"


@pytest.fixture
def masking_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """secrets.install() for one test, undone afterwards (it is process-wide by design)."""
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(secrets, "_installed", False)
    monkeypatch.setattr(secrets, "_known", set())
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)


def test_log_lines_and_tracebacks_never_carry_a_configured_secret(
    masking_installed: None, caplog: pytest.LogCaptureFixture, settings: object
) -> None:
    from sonolake.settings import Settings

    configured = Settings(
        _env_file=None,
        auth_tokens=list(TOKENS),
        aws_secret_access_key=SecretStr(SECRET_KEY),
        mlflow_uri=f"mysql://ml:{DB_PASSWORD}@db/ml",
    )
    secrets.install(configured)
    log = logging.getLogger("sonolake.test-secrets")
    with caplog.at_level(logging.INFO):
        log.info("client presented %s from %s", TOKENS[1], "127.0.0.1")
        try:
            raise RuntimeError(f"cannot reach store with key {SECRET_KEY}")
        except RuntimeError:
            log.exception("store failed; registry at mysql://ml:%s@db/ml", DB_PASSWORD)
    text = caplog.text
    _assert_no_secret(text)
    assert "client presented *** from 127.0.0.1" in text
    assert "RuntimeError: cannot reach store with key ***" in text, "traceback kept, masked"
