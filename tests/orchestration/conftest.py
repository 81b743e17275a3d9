"""Fixtures of the orchestration suite: isolated settings and one small real lake per session.

The lake is built once per test session (landing real recordings through the sidecar takes a
few seconds) and copied for each test that changes it, so tests stay independent.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lake_fixture import land_clips, small_lake_clips

from sonolake.settings import Settings


@dataclass(frozen=True)
class LakeEnv:
    """A state folder and lake root, and the settings that point at them."""

    root: Path

    @property
    def settings(self) -> Settings:
        return isolated_settings(self.root)


def isolated_settings(root: Path, **overrides: object) -> Settings:
    """Settings whose every path is under ``root`` (nothing read from the environment)."""
    values: dict[str, object] = {
        "state_dir": root / "state",
        "lake_uri": str(root / "lakehouse"),
        "data_dir": Path(__file__).resolve().parents[3] / "shared" / "data",
        "mlflow_uri": f"sqlite:///{root / 'state' / 'mlflow.db'}",
        "training_preset": "quick",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def build_small_lake(base: Path, shared_data: Path) -> Path:
    """Land the small set of real clips once under ``base`` (reused when already there)."""
    root = base / "small-lake"
    done = root / ".landed"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        settings = isolated_settings(root)
        land_clips(settings, small_lake_clips(shared_data))
        done.touch()
    return root


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
