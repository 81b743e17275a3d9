"""Fixtures of the orchestration suite: the dbt manifest the code location loads.

The small real lake and the empty environment come from ``tests/conftest.py``. The dbt
project is parsed once per test session, as a deployment's build step would
(``prepare_dbt_project``), before anything loads the definitions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session", autouse=True)
def dbt_manifest() -> Path:
    from orchestration import prepare_dbt_project

    return prepare_dbt_project()
