"""Live evidence: champion and shadow rows of gold.predictions compared, and the gate's live rule.

The rows are built the way the gateway and the sidecar build them (spool decision records →
the sidecar's ``prediction_rows``) and stored in a real Delta lake; the gate scores real
bundles on the tone held-out set and reads the lake through :func:`live_evidence`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from live_rows import segments
from serving_bundles import QUICK_SPEED

from lake_schemas import PREDICTIONS, Lake
from models.dataset import HeldoutSet
from models.evaluation import evaluate
from models.live_comparison import compare_live, live_evidence, save_comparison_png
from models.promotion import GatePolicy, PromotionGate

QUICK_SCORER = partial(evaluate, speed=QUICK_SPEED)


def test_comparison_pairs_the_same_segments_and_scores_labelled_ones(tmp_path: Path) -> None:
    truth = ["yes", "no", "stop", None, "banana"]  # "banana" is out of vocabulary: _unknown_
    champion = ["yes", "yes", "stop", "go", "_unknown_"]
    shadow = ["yes", "no", "go", "go", "no"]
    rows = segments(truth, champion, shadow, ("1", "2"))
    (comparison,) = compare_live(rows)
    assert (comparison.champion_version, comparison.shadow_version) == ("1", "2")
    assert comparison.segments == 5 and comparison.agreement == pytest.approx(2 / 5)
    assert comparison.labelled == 4
    assert comparison.champion_accuracy == pytest.approx(3 / 4)
    assert comparison.shadow_accuracy == pytest.approx(2 / 4)
    assert comparison.accuracy_change == pytest.approx(-1 / 4)
    assert comparison.per_label["_unknown_"] == (1, 1, 0)
    png = save_comparison_png(comparison, tmp_path / "live.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lakehouse")


def _gate(heldout: HeldoutSet, lake: Lake, **policy: float) -> PromotionGate:
    return PromotionGate(
        heldout,
        GatePolicy(latency_budget_us=1e9, **policy),  # type: ignore[arg-type]
        scorer=QUICK_SCORER,
        live_evidence=partial(live_evidence, lake),
    )


@pytest.mark.parametrize(
    ("policy", "shadow_correct", "passed", "reason"),
    [
        ({}, 0, True, "beats the champion"),  # off by default: live results do not matter
        ({"min_live_segments": 4}, 4, True, "live: live accuracy 1.0000 vs champion 0.7500"),
        ({"min_live_segments": 4}, 2, False, "live: loses 0.2500, more than 0.0200"),
        ({"min_live_segments": 4, "max_live_accuracy_loss": 0.3}, 2, True, "live: live acc"),
        ({"min_live_segments": 10}, 4, False, "4 labelled live segments"),
    ],
)
def test_the_gate_can_require_live_evidence(
    tone_heldout: HeldoutSet,
    good_bundle: Path,
    weak_bundle: Path,
    lake: Lake,
    policy: dict[str, float],
    shadow_correct: int,
    passed: bool,
    reason: str,
) -> None:
    truth = ["yes", "no", "stop", "go"]
    champion = ["yes", "no", "stop", "up"]  # 3 of 4
    shadow = truth[:shadow_correct] + ["down"] * (4 - shadow_correct)
    lake.append(PREDICTIONS, segments(truth, champion, shadow, ("1", "2")), writer="test")
    # offline the candidate (good, version 2) beats the champion (weak, version 1)
    decision = _gate(tone_heldout, lake, **policy).decide("2", good_bundle, "1", weak_bundle)
    assert decision.passed is passed, decision.reason
    assert reason in decision.reason


def test_live_evidence_is_about_this_champion_and_candidate(lake: Lake) -> None:
    lake.append(PREDICTIONS, segments(["yes"], ["yes"], ["yes"], ("1", "2")), writer="test")
    assert live_evidence(lake, "2", "1") is not None
    assert live_evidence(lake, "3", "1") is None
    assert live_evidence(lake, "2", "5") is None
