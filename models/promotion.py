"""The promotion gate: may this candidate replace the champion?

A candidate passes when, scored on the SAME held-out set as the champion,

1. it beats the champion: its accuracy exceeds the champion's by more than ``min_improvement``,
   or ties at exactly ``min_improvement`` and its macro-F1 is at least the champion's (macro-F1
   breaks ties, so a model that is as accurate but fairer across classes still wins); and
2. it meets the latency budget: batch-1 p99 of the CPU INT8 artifact ≤ ``latency_budget_us``;
3. where live evidence is required (``min_live_segments`` > 0; off by default, because a
   first challenger from ``sonolake train`` has seen no traffic yet), the gateway has
   shadow-scored it on at least ``min_live_segments`` labelled live segments next to the
   champion, and on those its accuracy is at most ``max_live_accuracy_loss`` below the
   champion's (:func:`judge_live`, evidence from :mod:`models.live_comparison`).

With no champion yet, the candidate needs the latency budget and an accuracy floor only. The
verdict is pure (:func:`judge`), so the rules are tested table-driven; :class:`PromotionGate`
adds the scoring of both models on the held-out set (with :func:`models.evaluation.evaluate`,
the evaluator training logs with). Deciding and applying are separate steps: a
:class:`PromotionDecision` says what the gate found and moves nothing;
:meth:`models.registry.Registry.apply` records it and, when it passed, moves the alias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from models.dataset import HeldoutSet
from models.evaluation import EvaluationReport, evaluate
from models.evaluation_log import EvaluationRecord
from models.live_comparison import LiveComparison
from models.live_comparison import live_evidence as read_live_evidence

TIE_TOLERANCE = 1e-9
"""Accuracies closer than this are equal (they are ratios of counts, so exact in practice)."""


LATENCY_BUDGET_US = 20_000.0
"""The default batch-1 p99 budget (µs) of the CPU INT8 artifact: a fifth of the gateway's
100-ms result-latency goal. The embedding classifier needs ~3.6 ms on one core of this class of
CPU and the CNN ~0.15 ms; a broken or runaway export (seconds) is still refused."""


@dataclass(frozen=True)
class GatePolicy:
    """The gate's thresholds; the CLI fills them from Settings (``SONOLAKE_PROMOTION_*``)."""

    latency_budget_us: float = LATENCY_BUDGET_US
    """Max batch-1 p99 latency of the CPU INT8 artifact, in µs."""
    min_improvement: float = 0.0
    """Accuracy (0..1) the candidate must gain over the champion; 0 means "at least as good"."""
    accuracy_floor: float = 0.5
    """Min accuracy (0..1) of a first champion: far above chance (1/12), catches a broken export."""
    min_live_segments: int = 0
    """Labelled live segments the candidate must have shadow-scored; 0: no live rule."""
    max_live_accuracy_loss: float = 0.02
    """Most live accuracy (0..1) the candidate may lose vs the champion on those segments."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]
    """Why it passed or failed, one line per rule, in the order the rules were applied."""


class StaleDecision(RuntimeError):
    """The champion moved between the decision and its application: decide again."""


def judge(
    candidate: EvaluationReport, champion: EvaluationReport | None, policy: GatePolicy
) -> Verdict:
    """Apply the gate's rules to two scores from the same held-out set."""
    reasons: list[str] = []
    passed = True
    p99 = candidate.latency_us_p99
    if p99 is None or p99 > policy.latency_budget_us:
        passed = False
        shown = "not measured" if p99 is None else f"{p99:.0f} µs"
        reasons.append(f"latency: p99 {shown} exceeds the budget {policy.latency_budget_us:.0f} µs")
    else:
        reasons.append(
            f"latency: p99 {p99:.0f} µs within the budget {policy.latency_budget_us:.0f} µs"
        )
    if champion is None:
        if candidate.accuracy < policy.accuracy_floor:
            passed = False
            reasons.append(
                f"no champion yet; accuracy {candidate.accuracy:.4f} is below the floor "
                f"{policy.accuracy_floor:.4f}"
            )
        else:
            reasons.append(
                f"no champion yet; accuracy {candidate.accuracy:.4f} meets the floor "
                f"{policy.accuracy_floor:.4f}"
            )
        return Verdict(passed, tuple(reasons))
    gain = candidate.accuracy - champion.accuracy
    versus = f"accuracy {candidate.accuracy:.4f} vs champion {champion.accuracy:.4f}"
    if gain > policy.min_improvement + TIE_TOLERANCE:
        reasons.append(f"beats the champion: {versus} (gain {gain:+.4f})")
    elif abs(gain - policy.min_improvement) <= TIE_TOLERANCE:
        f1 = f"macro-F1 {candidate.macro_f1:.4f} vs {champion.macro_f1:.4f}"
        if candidate.macro_f1 >= champion.macro_f1:
            reasons.append(f"ties the champion on accuracy ({versus}), wins on {f1}")
        else:
            passed = False
            reasons.append(f"ties the champion on accuracy ({versus}) but loses on {f1}")
    else:
        passed = False
        reasons.append(
            f"does not beat the champion: {versus} (gain {gain:+.4f}, "
            f"needs more than {policy.min_improvement:+.4f})"
        )
    return Verdict(passed, tuple(reasons))


def judge_live(evidence: LiveComparison | None, policy: GatePolicy) -> Verdict:
    """The live rule: enough labelled shadow-scored segments, and no more than the allowed
    accuracy loss against the champion on exactly those segments."""
    need = policy.min_live_segments
    if evidence is None or evidence.labelled < need:
        have = 0 if evidence is None else evidence.labelled
        return Verdict(
            False,
            (
                f"live: {have} labelled live segments shadow-scored next to the champion, "
                f"needs {need} (stream labelled traffic while it is the challenger)",
            ),
        )
    change = evidence.accuracy_change
    assert change is not None  # labelled ≥ need ≥ 1
    versus = (
        f"live accuracy {evidence.shadow_accuracy:.4f} vs champion "
        f"{evidence.champion_accuracy:.4f} on {evidence.labelled} labelled segments "
        f"(agreement {evidence.agreement:.3f})"
    )
    if change < -policy.max_live_accuracy_loss - TIE_TOLERANCE:
        return Verdict(
            False,
            (
                f"live: loses {-change:.4f}, more than "
                f"{policy.max_live_accuracy_loss:.4f}: {versus}",
            ),
        )
    return Verdict(True, (f"live: {versus}",))


LiveEvidence = Callable[[str, str], LiveComparison | None]
"""(candidate version, champion version) → what live traffic says (None: nothing yet)."""


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate decided, with both scores, ready to record in the lake."""

    candidate_version: str
    champion_before: str | None
    passed: bool
    reasons: tuple[str, ...]
    candidate: EvaluationReport
    champion: EvaluationReport | None
    dataset: str
    artifact: str

    @property
    def champion_after(self) -> str | None:
        return self.candidate_version if self.passed else self.champion_before

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def records(self) -> list[EvaluationRecord]:
        """The champion's re-evaluation (if any) and the candidate's verdict, as lake rows."""
        rows: list[EvaluationRecord] = []
        if self.champion is not None and self.champion_before is not None:
            rows.append(
                self.champion.record(self.champion_before, "evaluate", reason="gate baseline")
            )
        rows.append(
            self.candidate.record(
                self.candidate_version,
                "promote" if self.passed else "reject",
                champion_before=self.champion_before,
                champion_after=self.champion_after,
                gate_passed=self.passed,
                reason=self.reason,
            )
        )
        return rows


Scorer = Callable[[Path, HeldoutSet, str], EvaluationReport]


@dataclass
class PromotionGate:
    """Scores candidate and champion on one held-out set and judges them by ``policy``.

    ``artifact`` is the one both are scored with: INT8, what CPU serving runs (the gate's
    latency rule is about it too). ``scorer`` defaults to :func:`models.evaluation.evaluate`.
    """

    heldout: HeldoutSet
    policy: GatePolicy = field(default_factory=GatePolicy)
    artifact: str = "int8"
    scorer: Scorer = evaluate
    live_evidence: LiveEvidence | None = None
    """Reads the shadow comparison (:func:`models.live_comparison.live_evidence` on the lake);
    needed only when ``policy.min_live_segments`` > 0."""

    @classmethod
    def on_lake(cls, heldout: HeldoutSet, policy: GatePolicy, lake: Any) -> PromotionGate:
        """The gate every promotion path uses (the Dagster asset, ``sonolake promote``, the
        demo): live evidence read from ``lake``'s ``gold.predictions``."""
        return cls(heldout, policy, live_evidence=partial(read_live_evidence, lake))

    def decide(
        self,
        candidate_version: str,
        candidate_dir: Path,
        champion_version: str | None,
        champion_dir: Path | None,
    ) -> PromotionDecision:
        if champion_version is not None and candidate_version == champion_version:
            score = self.scorer(candidate_dir, self.heldout, self.artifact)
            return PromotionDecision(
                candidate_version,
                champion_version,
                False,
                (f"version {candidate_version} is already the champion",),
                score,
                None,
                self.heldout.name,
                self.artifact,
            )
        candidate = self.scorer(candidate_dir, self.heldout, self.artifact)
        champion = (
            self.scorer(champion_dir, self.heldout, self.artifact)
            if champion_dir is not None
            else None
        )
        verdict = judge(candidate, champion, self.policy)
        if self.policy.min_live_segments > 0 and champion_version is not None:
            evidence = (
                self.live_evidence(candidate_version, champion_version)
                if self.live_evidence is not None
                else None
            )
            live = judge_live(evidence, self.policy)
            verdict = Verdict(verdict.passed and live.passed, verdict.reasons + live.reasons)
        return PromotionDecision(
            candidate_version,
            champion_version,
            verdict.passed,
            verdict.reasons,
            candidate,
            champion,
            self.heldout.name,
            self.artifact,
        )
