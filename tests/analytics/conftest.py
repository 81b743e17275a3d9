"""Fixtures of the analytics suite: the dbt manifest and the small real lake of the session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestration"))


@pytest.fixture(scope="session", autouse=True)
def dbt_manifest() -> Path:
    from orchestration import prepare_dbt_project

    return prepare_dbt_project()
