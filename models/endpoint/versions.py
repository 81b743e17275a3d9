"""The versions an endpoint serves: one warmed engine per version the registry's aliases name.

Why it looks like this:

- One :class:`~models.serving.ServingEngine` per loaded version, so each version micro-batches
  its own callers (its batches never mix versions) and its metrics are its own.
- The aliases the endpoint follows (``champion``, ``challenger``, ``previous-champion``) decide
  what is loaded: a promotion or a rollback is an alias moving, and the version it moves to is
  loaded and warmed *before* the alias map is replaced, in one assignment on the event loop. A
  request resolves its version once, when it starts, and runs to its end on that engine, so a
  swap never fails a request. ``previous-champion`` stays loaded so a rollback is instant.
- A version no alias names any more is closed only when no request is using it (checked at each
  refresh), so it can never be closed under a request.
- Everything that mutates the maps runs on the server's event loop; loading (download, session
  creation, warm-up) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.serving import ServingEngine

log = logging.getLogger(__name__)

CHAMPION = "champion"
SERVED_ALIASES = ("champion", "challenger", "previous-champion")
"""Aliases whose versions are loaded; a request without a version gets the champion."""


class UnknownVersion(LookupError):
    """The requested version is neither loaded nor an alias of a loaded version."""


class NoChampionServed(LookupError):
    """No version is the champion yet (or it could not be loaded): nothing to serve by default."""


class ServedVersions:
    """Loaded versions and the aliases that name them; see the module docstring.

    ``aliases`` reads the registry's alias map (``{alias: version}``); ``load`` builds a warmed
    engine for a version. Both may block; they run in worker threads.
    """

    def __init__(
        self,
        aliases: Callable[[], Mapping[str, str]],
        load: Callable[[str], ServingEngine],
        served_aliases: Sequence[str] = SERVED_ALIASES,
    ) -> None:
        self._read_aliases = aliases
        self._load = load
        self.served_aliases = tuple(served_aliases)
        self._engines: dict[str, ServingEngine] = {}
        self._aliases: dict[str, str] = {}
        self._in_flight: Counter[str] = Counter()
        self.swaps = 0
        """Times the alias map changed after the first refresh."""
        self.refresh_errors = 0
        self._refreshed = False

    # ------------------------------------------------------------------ reading
    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    @property
    def engines(self) -> dict[str, ServingEngine]:
        return dict(self._engines)

    def loaded_versions(self) -> list[str]:
        """Loaded versions, numerically ordered where they are numbers."""
        return sorted(
            self._engines, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)
        )

    @property
    def champion(self) -> str | None:
        return self._aliases.get(CHAMPION)

    def resolve(self, version: str | None) -> tuple[str, ServingEngine]:
        """The version ``version`` names (a version, an alias, or None: the champion)."""
        if not version:
            champion = self._aliases.get(CHAMPION)
            if champion is None or champion not in self._engines:
                raise NoChampionServed(
                    "no champion version is loaded yet; promote one with `sonolake promote` "
                    "or ask for a version explicitly"
                )
            return champion, self._engines[champion]
        target = self._aliases.get(version, version)
        engine = self._engines.get(target)
        if engine is None:
            raise UnknownVersion(
                f"version {version!r} is not served; loaded versions: {self.loaded_versions()}, "
                f"aliases: {self._aliases}"
            )
        return target, engine

    @contextlib.contextmanager
    def in_use(self, version: str | None) -> Iterator[tuple[str, ServingEngine]]:
        """Resolve ``version`` once and keep its engine from being closed until the block ends."""
        resolved, engine = self.resolve(version)
        self._in_flight[resolved] += 1
        try:
            yield resolved, engine
        finally:
            self._in_flight[resolved] -= 1

    # ------------------------------------------------------------------ following the registry
    async def refresh(self) -> bool:
        """Load what the aliases name, swap the alias map in, retire idle versions. True if the
        alias map changed. A version that fails to load keeps its aliases where they were, and a
        champion that vanishes from the registry (or a registry that cannot be read: it answers
        with no aliases) keeps being served."""
        current = await asyncio.to_thread(self._read_aliases)
        wanted = {a: v for a, v in current.items() if a in self.served_aliases}
        if CHAMPION not in wanted and CHAMPION in self._aliases:
            wanted[CHAMPION] = self._aliases[CHAMPION]  # a stale champion beats none
        for version in sorted(set(wanted.values()) - self._engines.keys()):
            try:
                engine = await asyncio.to_thread(self._load, version)
            except Exception:
                self.refresh_errors += 1
                log.exception(
                    "version %s could not be loaded; its aliases stay where they were", version
                )
                for alias, target in list(wanted.items()):
                    if target == version:
                        if alias in self._aliases:
                            wanted[alias] = self._aliases[alias]
                        else:
                            del wanted[alias]
                continue
            self._engines[version] = engine
            log.info("loaded version %s on %s (%s)", version, engine.provider, engine.artifact)
        changed = wanted != self._aliases
        if changed:
            if self._refreshed:
                self.swaps += 1
            log.info("serving aliases %s", wanted)
        self._aliases = wanted
        self._refreshed = True
        self._retire()
        return changed

    def _retire(self) -> None:
        named = set(self._aliases.values())
        for version in [v for v in self._engines if v not in named and not self._in_flight[v]]:
            self._engines.pop(version).close()
            log.info("unloaded version %s (no alias names it)", version)

    async def follow(self, poll_interval_s: float) -> None:
        """Refresh every ``poll_interval_s`` seconds until cancelled; errors are counted."""
        while True:
            await asyncio.sleep(poll_interval_s)
            try:
                await self.refresh()
            except Exception:
                self.refresh_errors += 1
                log.exception("reading the registry's aliases failed; serving what is loaded")

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self._aliases = {}
