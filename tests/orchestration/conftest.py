"""Fixtures of the orchestration suite: isolated settings and one small real lake per session.

The lake is built once per test session (landing real recordings through the sidecar takes a
few seconds) and copied for each test that changes it, so tests stay independent.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lake_fixture import LakeEnv, build_small_lake


@pytest.fixture(scope="session")
def small_lake_template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return build_small_lake(tmp_path_factory.getbasetemp(), shared_data)


@pytest.fixture
def small_lake(small_lake_template: Path, tmp_path: Path) -> LakeEnv:
    """A private copy of the small real lake (bronze, silver, sessions, spool state)."""
    root = tmp_path / "env"
    shutil.copytree(small_lake_template, root)
    return LakeEnv(root)


@pytest.fixture
def empty_env(tmp_path: Path) -> LakeEnv:
    """Settings over an empty state folder and lake."""
    return LakeEnv(tmp_path / "empty")
