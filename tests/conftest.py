"""Fixtures every suite shares: isolated settings, the real-data folder, a small real lake."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import REPO_ROOT

from sonolake.settings import Settings

if TYPE_CHECKING:
    from real_lake import LakeEnv  # imports the sidecar (Beam): only where a test needs a lake

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


@pytest.fixture(scope="session")
def bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled modules shared by every sidecar/gateway process the suite starts.

    The environment may disable bytecode caching; then each start would recompile Beam and
    the feature stack (seconds). One private cache folder for the whole session keeps every
    start after the first cheap (the sidecar and chaos suites share it) and the checkout clean.
    """
    return tmp_path_factory.mktemp("pycache")


@pytest.fixture(scope="session")
def small_lake_template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The small real lake (real recordings landed by the sidecar), built once per session."""
    from real_lake import build_small_lake

    return build_small_lake(tmp_path_factory.getbasetemp(), shared_data)


@pytest.fixture
def small_lake(small_lake_template: Path, tmp_path: Path) -> LakeEnv:
    """A private copy of the small real lake (bronze, silver, sessions, spool state)."""
    from real_lake import LakeEnv

    root = tmp_path / "env"
    shutil.copytree(small_lake_template, root)
    return LakeEnv(root)


@pytest.fixture
def empty_env(tmp_path: Path) -> LakeEnv:
    """Settings over an empty state folder and lake."""
    from real_lake import LakeEnv

    return LakeEnv(tmp_path / "empty")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long chaos runs only when asked for by marker (``-m chaos``), never by default."""
    if "chaos" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long chaos run: `make chaos` (pytest -m chaos)")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)
