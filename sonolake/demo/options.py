"""The demo's knobs (a light module: the command line imports it without loading the stack)."""

from __future__ import annotations

from dataclasses import dataclass

DEMO_EPOCHS = 12
"""The quick preset with 12 epochs: ~0.6–0.7 held-out accuracy in about two minutes on 2 cores
(8 epochs measured 0.56, barely above the gate's 0.5 floor for a first champion)."""


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
    """Epochs of the quick preset's small model (None: the preset's own)."""
    reset: bool = False
