"""Fixtures of the sidecar suite: a shared bytecode cache for the processes it starts."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled modules shared by every sidecar/gateway process the suite starts.

    The environment may disable bytecode caching; then each start would recompile Beam and
    the feature stack (seconds). A private cache folder keeps restarts cheap and the checkout
    clean.
    """
    return tmp_path_factory.mktemp("pycache")
