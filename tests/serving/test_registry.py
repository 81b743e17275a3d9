"""The registry against a real SQLite MLflow store and a real Delta lake."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from serving_bundles import QUICK_SPEED, tone_windows

from lake_schemas import MODEL_EVALUATIONS
from models.evaluation import evaluate
from models.promotion import GatePolicy, PromotionGate, StaleDecision
from models.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    NoChampion,
    Registry,
    UnknownModel,
)
from models.serving import CPU_PROVIDER, ServingEngine

GENEROUS = GatePolicy(latency_budget_us=1e6, min_improvement=0.0, accuracy_floor=0.5)
QUICK_SCORER = partial(evaluate, speed=QUICK_SPEED)


def _rows(registry: Registry) -> list[dict]:
    table = registry.lake.read(MODEL_EVALUATIONS).sort_by("evaluated_at")
    return table.to_pylist()


def test_log_bundle_records_run_and_resolves_every_reference(
    registry: Registry, good_bundle: Path, weak_bundle: Path, tmp_path: Path
) -> None:
    png = tmp_path / "confusion.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")  # content is not inspected; the file must be logged
    v1 = registry.log_bundle(
        weak_bundle, {"epochs": 3, "arch": {"channels": 64}}, {"accuracy": 0.6}, None, None
    )
    v2 = registry.log_bundle(
        good_bundle,
        {"epochs": 5},
        {"accuracy": 0.99, "macro_f1": 0.98},
        [{"artifact": "fp32", "accuracy": 0.99}, {"artifact": "int8", "accuracy": 0.98}],
        png,
    )
    assert (v1, v2) == ("1", "2")
    assert registry.aliases() == {CHALLENGER: "2"}

    # The run holds params, metrics, the evaluation table, the image and model.json.
    client = registry.client
    mv = client.get_model_version(registry.model_name, "2")
    run = client.get_run(mv.run_id)
    assert run.data.params["epochs"] == "5"
    assert run.data.metrics == {"accuracy": 0.99, "macro_f1": 0.98}
    logged = {a.path for a in client.list_artifacts(mv.run_id, "evaluation")}
    assert logged == {"evaluation/confusion.png", "evaluation/evaluation.json"}
    # Each artifact is its own MLflow ONNX model with explicit requirements.
    for kind in ("fp32", "int8", "fp16"):
        model_id = mv.tags[f"sonolake.artifact.{kind}"]
        location = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
        requirements = (location / "requirements.txt").read_text().split()
        runtime = "onnxruntime-gpu" if kind == "fp16" else "onnxruntime"
        assert any(r.startswith(f"{runtime}==") for r in requirements), requirements

    # References: alias, version number, bundle path; all resolve to complete bundles.
    challenger = registry.resolve("challenger")
    assert challenger.version == "2"
    assert sorted(p.name for p in challenger.bundle_dir.iterdir()) == [
        "model.fp16.onnx",
        "model.int8.onnx",
        "model.json",
        "model.onnx",
    ]
    assert json.loads((challenger.bundle_dir / "model.json").read_text()) == json.loads(
        (good_bundle / "model.json").read_text()
    )
    assert registry.resolve("1").version == "1"
    by_path = registry.resolve(str(good_bundle))
    assert by_path.version is None and by_path.bundle_dir == good_bundle.resolve()
    # The downloaded bundle computes exactly what the original does.
    windows, _ = tone_windows(2, seed=5)
    for artifact in ("fp32", "int8", "fp16"):
        got = ServingEngine.from_bundle(
            challenger.bundle_dir, providers=[CPU_PROVIDER], artifact=artifact
        ).classify_batch(windows)
        want = ServingEngine.from_bundle(
            good_bundle, providers=[CPU_PROVIDER], artifact=artifact
        ).classify_batch(windows)
        assert [p.label for p in got] == [p.label for p in want]
        np.testing.assert_allclose([p.score for p in got], [p.score for p in want], rtol=1e-6)

    # Cached: resolving again reuses the folder (no second download).
    stamp = (challenger.bundle_dir / "model.json").stat().st_mtime_ns
    assert registry.resolve("2").bundle_dir == challenger.bundle_dir
    assert (challenger.bundle_dir / "model.json").stat().st_mtime_ns == stamp

    for unknown in ("champion", "99", "no-such-alias", str(tmp_path / "missing")):
        with pytest.raises(UnknownModel):
            registry.resolve(unknown)

    listed = registry.versions()
    assert [(v.version, v.aliases) for v in listed] == [("2", ("challenger",)), ("1", ())]
    assert listed[0].metrics["accuracy"] == 0.99


def test_gate_promotes_refuses_and_rollback_restores(
    registry: Registry, good_bundle: Path, weak_bundle: Path, bad_bundle: Path, tone_heldout
) -> None:
    gate = PromotionGate(tone_heldout, GENEROUS, scorer=QUICK_SCORER)
    weak = registry.log_bundle(weak_bundle, {}, {})
    first = registry.promote(weak, gate)
    assert first.passed and first.champion is None
    assert 0.5 <= first.candidate.accuracy < 0.9
    assert registry.alias_version(CHAMPION) == weak

    bad = registry.log_bundle(bad_bundle, {}, {})
    refused = registry.promote(None, gate)  # default: the challenger
    assert not refused.passed and refused.candidate_version == bad
    assert "does not beat the champion" in refused.reason
    assert registry.alias_version(CHAMPION) == weak

    good = registry.log_bundle(good_bundle, {}, {})
    promoted = registry.promote(good, gate)
    assert promoted.passed, promoted.reasons
    assert promoted.candidate.accuracy > promoted.champion.accuracy
    assert registry.aliases()[CHAMPION] == good
    assert registry.aliases()[PREVIOUS_CHAMPION] == weak

    assert registry.rollback() == (good, weak)
    assert registry.alias_version(CHAMPION) == weak
    assert PREVIOUS_CHAMPION not in registry.aliases()
    with pytest.raises(NoChampion):
        registry.rollback()

    rows = _rows(registry)
    assert [(r["action"], r["model_version"], r["gate_passed"]) for r in rows] == [
        ("promote", weak, True),
        ("evaluate", weak, None),  # the champion re-scored as the baseline of the bad candidate
        ("reject", bad, False),
        ("evaluate", weak, None),
        ("promote", good, True),
        ("rollback", weak, None),
    ]
    assert rows[4]["champion_before"] == weak and rows[4]["champion_after"] == good
    assert rows[5]["champion_before"] == good and rows[5]["champion_after"] == weak
    assert rows[4]["accuracy"] == promoted.candidate.accuracy
    assert json.loads(rows[4]["per_class_f1_json"])["yes"] == pytest.approx(
        promoted.candidate.per_class_f1["yes"]
    )
    assert all(r["dataset"] == tone_heldout.name for r in rows[:5])
    assert rows[4]["latency_us_p99"] > 0


def test_gate_refuses_a_better_model_over_the_latency_budget(
    registry: Registry, good_bundle: Path, tone_heldout
) -> None:
    version = registry.log_bundle(good_bundle, {}, {})
    strict = PromotionGate(tone_heldout, GatePolicy(latency_budget_us=0.001), scorer=QUICK_SCORER)
    decision = registry.promote(version, strict)
    assert not decision.passed
    assert "exceeds the budget" in decision.reason
    assert registry.alias_version(CHAMPION) is None
    (row,) = _rows(registry)
    assert row["action"] == "reject" and row["gate_passed"] is False


def test_a_decision_moves_nothing_until_it_is_applied(
    registry: Registry, good_bundle: Path, weak_bundle: Path, tone_heldout
) -> None:
    gate = PromotionGate(tone_heldout, GENEROUS, scorer=QUICK_SCORER)
    weak = registry.log_bundle(weak_bundle, {}, {})
    decision = registry.decide(weak, gate)
    assert decision.passed and decision.champion_before is None
    assert registry.alias_version(CHAMPION) is None, "deciding moves no alias"
    assert not registry.lake.exists(MODEL_EVALUATIONS), "and records nothing"
    registry.apply(decision)
    assert registry.alias_version(CHAMPION) == weak
    assert [(r["action"], r["model_version"]) for r in _rows(registry)] == [("promote", weak)]


def test_a_decision_made_against_another_champion_is_refused(
    registry: Registry, good_bundle: Path, weak_bundle: Path, tone_heldout
) -> None:
    gate = PromotionGate(tone_heldout, GENEROUS, scorer=QUICK_SCORER)
    weak = registry.log_bundle(weak_bundle, {}, {})
    good = registry.log_bundle(good_bundle, {}, {})
    stale = registry.decide(good, gate)  # judged against no champion
    registry.promote(weak, gate)  # meanwhile, another version became champion
    with pytest.raises(StaleDecision, match="evaluate it again"):
        registry.apply(stale)
    assert registry.alias_version(CHAMPION) == weak
    assert [r["action"] for r in _rows(registry)] == ["promote"], "the stale one left no row"


OPEN_FRESH_STORE = """
import sys
from models.registry import Registry
registry = Registry(sys.argv[1], "audio-event-classifier")
print(len(registry.client.search_registered_models()))
"""


def test_processes_opening_a_fresh_sqlite_store_at_once_all_get_a_whole_one(
    tmp_path: Path,
) -> None:
    """Gateway workers and the Dagster process open a new store together; MLflow migrates a
    store in its own file, so two migrating at once broke it for good. Now it is made whole
    and linked into place, and every process sees the finished store."""
    import sqlite3
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_FRESH_STORE, uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [opener.communicate(timeout=180) for opener in openers]
    assert [opener.returncode for opener in openers] == [0, 0, 0], [err for _, err in results]
    assert [out.strip() for out, _ in results] == ["0", "0", "0"]
    with sqlite3.connect(tmp_path / "state" / "mlflow.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"experiments", "registered_models", "model_versions"} <= tables
    assert not [name for name in tables if name.startswith("_alembic_tmp")]
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["mlflow.db"]
    registry = Registry(uri, "audio-event-classifier")
    assert registry.client.get_experiment("0").name == "Default"
