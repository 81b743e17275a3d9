"""Hot swap: the engine follows the champion alias without failing a request in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from serving_bundles import tone_windows

from models.registry import CHAMPION, Registry
from models.serving import CPU_PROVIDER, ServingEngine

CALLERS = 8
LOAD_BEFORE_SWAP_S = 0.4
LOAD_AFTER_SWAP_S = 0.4


@pytest.fixture
def two_versions(registry: Registry, weak_bundle: Path, good_bundle: Path) -> tuple[str, str]:
    """Version 1 (weak) is the champion; version 2 (good) is registered but not served yet."""
    old = registry.log_bundle(weak_bundle, {}, {})
    registry.set_alias(CHAMPION, old)
    new = registry.log_bundle(good_bundle, {}, {})
    return old, new


def _expected_labels(bundle: Path, windows) -> list[str]:
    engine = ServingEngine.from_bundle(bundle, providers=[CPU_PROVIDER])
    return [p.label for p in engine.classify_batch(windows)]


def test_swap_under_concurrent_load_fails_nothing(
    registry: Registry, two_versions, weak_bundle: Path, good_bundle: Path
) -> None:
    old, new = two_versions
    windows, _ = tone_windows(2, seed=9)
    expected = {
        old: _expected_labels(weak_bundle, windows),
        new: _expected_labels(good_bundle, windows),
    }
    assert expected[old] != expected[new]  # so a result shows which model made it
    engine = ServingEngine.from_registry(
        registry,
        providers=[CPU_PROVIDER],
        max_batch=8,
        max_wait_us=500,
    )
    assert engine.model_version == old
    results: list[tuple[float, int, object]] = []  # (started_s, window index, prediction)

    async def caller(offset: int, stop: asyncio.Event) -> None:
        i = offset
        while not stop.is_set():
            index = i % len(windows)
            started = time.perf_counter()
            results.append((started, index, await engine.classify(windows[index])))
            i += CALLERS

    async def main() -> float:
        stop = asyncio.Event()
        callers = [asyncio.create_task(caller(c, stop)) for c in range(CALLERS)]
        await asyncio.sleep(LOAD_BEFORE_SWAP_S)
        registry.set_alias(CHAMPION, new)
        assert await engine.refresh() is True  # loads in a thread while callers keep going
        swapped = time.perf_counter()
        await asyncio.sleep(LOAD_AFTER_SWAP_S)
        stop.set()
        await asyncio.gather(*callers)  # raises if any request failed
        return swapped

    try:
        swapped_at = asyncio.run(main())
    finally:
        engine.close()

    versions = [p.model_version for _, _, p in results]
    assert set(versions) == {old, new}
    for started, index, prediction in results:
        # Each result comes wholly from the model it names...
        assert prediction.label == expected[prediction.model_version][index]
        # ...and everything asked after the swap returned runs on the new model.
        if started > swapped_at:
            assert prediction.model_version == new
    assert sum(v == new for v in versions) > CALLERS
    stats = engine.metrics.snapshot()
    assert stats["failed_requests"] == 0 and stats["swaps"] == 2  # initial load + the swap
    assert stats["requests"] == len(results)


def test_follow_picks_up_promotion_and_rollback(registry: Registry, two_versions) -> None:
    old, new = two_versions
    engine = ServingEngine.from_registry(
        registry,
        providers=[CPU_PROVIDER],
    )
    engine.follow(poll_interval_s=0.05)
    try:
        registry.set_alias(CHAMPION, new)
        _wait_for(lambda: engine.model_version == new)
        registry.set_alias(CHAMPION, old)  # what a rollback does to the alias
        _wait_for(lambda: engine.model_version == old)
        # No alias at all: keep serving rather than go empty.
        registry.client.delete_registered_model_alias(registry.model_name, CHAMPION)
        time.sleep(0.3)
        assert engine.model_version == old and engine.loaded
    finally:
        engine.close()
    assert engine.metrics.snapshot()["refresh_errors"] == 0


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the engine did not follow the alias in time")
        time.sleep(0.02)
