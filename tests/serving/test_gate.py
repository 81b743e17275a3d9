"""The promotion gate's rules, table-driven on scores (no models needed)."""

from __future__ import annotations

import pytest

from models.dataset import LABELS
from models.evaluation import EvaluationReport
from models.promotion import GatePolicy, judge


def score(accuracy: float, macro_f1: float, p99_us: float | None = 300.0) -> EvaluationReport:
    return EvaluationReport(
        artifact="int8",
        dataset="heldout",
        labels=LABELS,
        n_windows=600,
        accuracy=accuracy,
        macro_f1=macro_f1,
        per_class_f1={},
        confusion=[],
        provider="CPUExecutionProvider",
        latency_us_p50=None if p99_us is None else p99_us / 2,
        latency_us_p99=p99_us,
    )


POLICY = GatePolicy(latency_budget_us=1000.0, min_improvement=0.0, accuracy_floor=0.5)


@pytest.mark.parametrize(
    ("candidate", "champion", "policy", "passed", "reason_has"),
    [
        # beats the champion on accuracy
        (score(0.90, 0.80), score(0.88, 0.85), POLICY, True, "beats the champion"),
        # worse accuracy: refused even with better macro-F1
        (score(0.87, 0.95), score(0.88, 0.85), POLICY, False, "does not beat"),
        # tie on accuracy: macro-F1 decides, both ways
        (score(0.88, 0.86), score(0.88, 0.85), POLICY, True, "wins on macro-F1"),
        (score(0.88, 0.84), score(0.88, 0.85), POLICY, False, "loses on macro-F1"),
        # a required improvement: +0.01 is not more than +0.02
        (
            score(0.89, 0.90),
            score(0.88, 0.85),
            GatePolicy(min_improvement=0.02),
            False,
            "needs more than +0.0200",
        ),
        (
            score(0.91, 0.80),
            score(0.88, 0.85),
            GatePolicy(min_improvement=0.02),
            True,
            "gain +0.0300",
        ),
        # better model, but too slow
        (score(0.95, 0.95, p99_us=1500), score(0.88, 0.85), POLICY, False, "exceeds the budget"),
        (score(0.95, 0.95, p99_us=None), score(0.88, 0.85), POLICY, False, "not measured"),
        # no champion: only the floor and the budget
        (score(0.55, 0.50), None, POLICY, True, "meets the floor"),
        (score(0.45, 0.50), None, POLICY, False, "below the floor"),
        (score(0.95, 0.95, p99_us=2000), None, POLICY, False, "exceeds the budget"),
    ],
)
def test_judge(candidate, champion, policy, passed, reason_has) -> None:
    verdict = judge(candidate, champion, policy)
    assert verdict.passed is passed
    assert any(reason_has in r for r in verdict.reasons), verdict.reasons


def test_every_rule_reports_a_reason() -> None:
    verdict = judge(score(0.9, 0.9), score(0.8, 0.8), POLICY)
    assert verdict.reasons[0].startswith("latency:")
    assert len(verdict.reasons) == 2
