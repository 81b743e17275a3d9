"""Model versions a client names (``model=<version>``), loaded when first asked for and kept.

Why it looks like this:

- The champion and the challenger are held from start-up; any other registered version is
  loaded the first time a session asks for it (download, session creation, warm-up: ms to
  seconds, in a worker thread, before that session's ``Metadata``), then kept for every later
  session that names it. It answers that session to its end: a held version is never swapped.
- Clients are hostile: at most ``limit`` versions are held at once (each costs a model's memory
  and a batcher thread) and a held version is never evicted (a session may be using it), so once
  the room is taken a new version gets the champion and a ``model_unavailable`` Warning. A
  version that cannot be loaded (not registered, a broken bundle) is remembered for
  ``retry_after_s`` so a flood of bad names costs one registry lookup each, not one per session;
  loads run one at a time, so only the sessions naming an unheld version wait for them.
- Only digits name a version (``ListenParams.model_fallback`` sends anything else to the
  champion first), so nothing a client sends reaches the registry but a number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from streaming.gateway.results import Classifier

log = logging.getLogger(__name__)


class HeldEngine(Classifier, Protocol):
    """A classifier the gateway owns and closes when it stops."""

    def close(self) -> None: ...


VersionLoader = Callable[[str], HeldEngine]
"""Builds a warmed engine for one registered version; raises when it cannot (blocking)."""


class HeldVersions:
    """See the module docstring; every method runs on the gateway's event loop."""

    def __init__(
        self, loader: VersionLoader | None = None, *, limit: int = 2, retry_after_s: float = 60.0
    ) -> None:
        self.loader = loader
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._engines: dict[str, HeldEngine] = {}
        self._failed: dict[str, float] = {}
        """Version → monotonic time after which loading it may be tried again."""
        self._lock = asyncio.Lock()
        self.loads = 0
        self.load_failures = 0

    @property
    def versions(self) -> list[str]:
        return sorted(self._engines, key=int)

    def held(self, version: str) -> HeldEngine | None:
        return self._engines.get(version)

    async def get(self, version: str) -> HeldEngine | None:
        """The engine of ``version``, loading it if there is room; None when it cannot serve."""
        engine = self._engines.get(version)
        if engine is not None or not self._may_load(version):
            return engine
        async with self._lock:  # one load at a time; a second asker finds it loaded
            engine = self._engines.get(version)
            if engine is not None or not self._may_load(version):
                return engine
            assert self.loader is not None
            try:
                engine = await asyncio.to_thread(self.loader, version)
            except Exception as exc:
                self.load_failures += 1
                self._failed[version] = time.monotonic() + self.retry_after_s
                log.warning("model version %s cannot be served on request: %s", version, exc)
                return None
            if not engine.loaded:
                engine.close()
                self._failed[version] = time.monotonic() + self.retry_after_s
                return None
            self.loads += 1
            self._engines[version] = engine
            log.info("holding model version %s for the sessions that name it", version)
            return engine

    def _may_load(self, version: str) -> bool:
        if self.loader is None or not version.isdigit() or len(self._engines) >= self.limit:
            return False
        retry_at = self._failed.get(version)
        return retry_at is None or time.monotonic() >= retry_at

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
