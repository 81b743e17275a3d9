"""The promotion gate split in two, so a blocking asset check can sit between the halves.

:func:`decide` scores candidate and champion on the same held-out set and judges them
(:class:`models.promotion.PromotionGate`), without touching any alias. If the blocking check
lets the run continue, ``champion_model`` applies that very decision through
:meth:`models.registry.Registry.promote` with an :class:`ApprovedGate`, which hands back the
decision already made instead of scoring both models a second time, and refuses if the
champion changed in between (then the decision is stale and the run must evaluate again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from models.dataset import LABELS
from models.promotion import GatePolicy, PromotionDecision, PromotionGate
from models.registry import CHAMPION, Registry
from models.scoring import HeldoutSet
from orchestration.training_data import TrainingSet


class StaleDecision(RuntimeError):
    """The champion moved between the evaluation and the promotion."""


def heldout_of(training_set: TrainingSet) -> HeldoutSet:
    """The held-out devices' windows of a training set, named after the set."""
    labelled, _, test, _ = training_set.load()
    return HeldoutSet(
        name=f"lake:training-set-{training_set.set_id}#heldout-devices",
        windows=labelled.windows[test].astype(np.float32),
        labels=tuple(LABELS[i] for i in labelled.labels[test]),
    )


def decide(
    registry: Registry, version: str, heldout: HeldoutSet, policy: GatePolicy
) -> PromotionDecision:
    """Judge ``version`` against the current champion; moves nothing."""
    champion = registry.alias_version(CHAMPION)
    candidate_dir = registry.resolve(version).bundle_dir
    champion_dir = registry.resolve(champion).bundle_dir if champion is not None else None
    return PromotionGate(heldout, policy).decide(version, candidate_dir, champion, champion_dir)


@dataclass
class ApprovedGate(PromotionGate):
    """A gate that returns a decision made earlier (by :func:`decide`) for the same pair."""

    decision: PromotionDecision | None = None

    def decide(
        self,
        candidate_version: str,
        candidate_dir: Path,
        champion_version: str | None,
        champion_dir: Path | None,
    ) -> PromotionDecision:
        decision = self.decision
        if decision is None or decision.candidate_version != candidate_version:
            raise StaleDecision(f"no decision was made for version {candidate_version}")
        if decision.champion_before != champion_version:
            raise StaleDecision(
                f"the champion changed from {decision.champion_before} to {champion_version} "
                "since the evaluation; materialize model_evaluation again"
            )
        return decision


def evaluation_metadata(decision: PromotionDecision) -> dict[str, Any]:
    """Numbers the UI plots across evaluations, the verdict and why."""
    candidate = decision.candidate
    metadata: dict[str, Any] = {
        "candidate_version": decision.candidate_version,
        "champion_before": decision.champion_before or "none",
        "gate_passed": dg.MetadataValue.bool(decision.passed),
        "accuracy": dg.MetadataValue.float(candidate.accuracy),
        "macro_f1": dg.MetadataValue.float(candidate.macro_f1),
        "heldout_windows": dg.MetadataValue.int(candidate.n_windows),
        "dataset": decision.dataset,
        "artifact": decision.artifact,
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        "per_class_f1": dg.MetadataValue.md(
            "| label | F1 |\n| --- | --- |\n"
            + "\n".join(f"| {k} | {v:.3f} |" for k, v in candidate.per_class_f1.items())
        ),
    }
    for name in ("latency_us_p50", "latency_us_p99", "windows_per_s"):
        value = getattr(candidate, name)
        if value is not None:
            metadata[name] = dg.MetadataValue.float(float(value))
    if decision.champion is not None:
        metadata["champion_accuracy"] = dg.MetadataValue.float(decision.champion.accuracy)
    return metadata
