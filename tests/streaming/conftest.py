"""Fixtures for the streaming tests: gateways on free loopback ports, started and stopped here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gateway_support import TEST_CONFIG, GatewayThread

from streaming.gateway.results import Classifier


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``make_gateway(**config_overrides)`` → a started :class:`GatewayThread`."""
    started: list[GatewayThread] = []

    def make(engine: Classifier | None = None, **overrides: Any) -> GatewayThread:
        spool_dir = tmp_path / f"spool-{len(started)}"
        gateway = GatewayThread(replace(TEST_CONFIG, **overrides), spool_dir, engine).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    """One shared gateway for tests that only need a healthy default server."""
    gateway = GatewayThread(TEST_CONFIG, tmp_path_factory.mktemp("spool")).start()
    yield gateway
    gateway.stop()
