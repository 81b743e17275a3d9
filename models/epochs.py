"""One epoch of training, as the learning curves plot it (shared by every model family)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochReport:
    """One epoch of one member: what the learning curves plot (one point per epoch)."""

    member: int
    epoch: int
    epochs: int
    loss: float
    """Mean training loss over the epoch's batches (cross-entropy, nats)."""
    seconds: float
    accuracy: float = 0.0
    """Share (0..1) of the epoch's augmented training windows the network got right as it
    trained (mixed examples count for their dominant label)."""
    monitor_accuracy: float | None = None
    """Accuracy (0..1) on the monitoring set after the epoch, when one was given."""
