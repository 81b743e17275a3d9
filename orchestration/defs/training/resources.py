"""Defaults of the model lifecycle taken from the environment's settings.

Run config can override the training preset per run (the UI's launchpad, the demo); the gate's
thresholds are policy and only come from here (``SONOLAKE_PROMOTION_*``).
"""

import dagster as dg

from models.promotion import LATENCY_BUDGET_US, GatePolicy


class ModelLifecycleResource(dg.ConfigurableResource):
    """How retraining trains by default, and what a candidate must achieve to be served."""

    training_preset: str = "embedding"
    """A :data:`models.training.PRESETS` name: ``embedding`` (default), ``full`` or ``quick``."""
    latency_budget_us: float = LATENCY_BUDGET_US
    """Max batch-1 p99 latency of the CPU INT8 artifact (µs)."""
    min_improvement: float = 0.0
    """Accuracy (0..1) a candidate must gain over the champion."""
    accuracy_floor: float = 0.5
    """Min held-out accuracy (0..1) of a first champion."""
    min_live_segments: int = 0
    """Labelled live segments a candidate must have shadow-scored (0: no live rule)."""
    max_live_accuracy_loss: float = 0.02
    """Most live accuracy (0..1) a candidate may lose vs the champion on those segments."""

    def gate_policy(self) -> GatePolicy:
        return GatePolicy(
            latency_budget_us=self.latency_budget_us,
            min_improvement=self.min_improvement,
            accuracy_floor=self.accuracy_floor,
            min_live_segments=self.min_live_segments,
            max_live_accuracy_loss=self.max_live_accuracy_loss,
        )
