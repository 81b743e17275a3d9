"""Fixtures every suite shares: isolated settings, the real-data folder, server helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import REPO_ROOT

from sonolake.settings import Settings

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recordings; tests about model quality or real audio skip when absent."""
    if not (SHARED_DATA / "speech_commands" / "manifest.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (the data folder beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings isolated in a temporary folder: a fresh lake, spool, MLflow store and state."""
    for name in list(__import__("os").environ):
        if name.startswith("SONOLAKE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SONOLAKE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SONOLAKE_LAKE_URI", str(tmp_path / "lakehouse"))
    monkeypatch.setenv("SONOLAKE_DATA_DIR", str(SHARED_DATA))
    return Settings(_env_file=None)
