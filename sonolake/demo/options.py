"""The demo's knobs (a light module: the command line imports it without loading the stack)."""

from __future__ import annotations

from dataclasses import dataclass

DEMO_PRESET = "embedding"
"""The served recipe (not a deliberately small one) trains the demo's champion and its
retraining, on the windows the lake holds: pretrained speech embeddings and a linear layer,
whose whole training (embedding every window once, then the layer) takes well under a minute
(see docs/models.md)."""
DEMO_EPOCHS: int | None = None
"""Training epochs of the demo's models (None: the preset's own)."""

DEMO_LIVE_SEGMENTS = 100
"""Labelled live segments a retrained version must have shadow-scored next to the champion
before the demo's gate promotes it (``SONOLAKE_PROMOTION_MIN_LIVE_SEGMENTS``, unless set): the
serving replay, played again with the retrained version as challenger, yields ~200."""


@dataclass(frozen=True)
class DemoOptions:
    streams: int = 24
    """Devices streaming at once in the training replay (at least 20)."""
    replay_speed: float = 4.0
    """The training and drift replays' pace, a multiple of real time. The gateway decides
    every utterance live and the lake's events are those decisions, so a replay that outruns
    live processing (unpaced: 474 finals for 3,169 clips) would leave most clips eventless."""
    training_limit: int | None = None
    """Replay only this many training clips (None: every clip)."""
    serving_limit: int = 240
    drift_limit: int = 300
    epochs: int | None = DEMO_EPOCHS
    """Training epochs (None: the preset's own)."""
    reset: bool = False
