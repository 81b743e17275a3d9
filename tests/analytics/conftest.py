"""Fixtures of the analytics suite: the same small real lake the orchestration suite uses."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestration"))

from lake_fixture import LakeEnv, build_small_lake


@pytest.fixture
def analytics_lake(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, tmp_path: Path
) -> LakeEnv:
    """A private copy of the small real lake (built once per session, shared with orchestration)."""
    template = build_small_lake(tmp_path_factory.getbasetemp(), shared_data)
    root = tmp_path / "env"
    shutil.copytree(template, root)
    return LakeEnv(root)
