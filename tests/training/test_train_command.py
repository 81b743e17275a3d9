"""``sonolake train`` end to end on the real recordings (one epoch of the quick preset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sonolake.cli import main
from sonolake.settings import Settings


def test_train_writes_an_evaluated_bundle(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "bundle"
    summary_path = tmp_path / "summary.json"
    code = main(
        [
            "train",
            "--preset",
            "quick",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--json",
            str(summary_path),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out speakers" in printed and "int8" in printed
    summary = json.loads(summary_path.read_text())
    assert summary["test_speakers"] > 10 and summary["train_windows"] > 2000
    manifest = json.loads((out / "model.json").read_text())
    for key in ("accuracy", "macro_f1", "int8_accuracy", "fp16_accuracy", "int8_latency_us_p99"):
        assert key in manifest["metrics"]
    assert manifest["metrics"]["accuracy"] == summary["metrics"]["accuracy"]
    assert (out / "confusion.png").is_file() and (out / "evaluation.json").is_file()


def test_unknown_preset_is_bad_input(settings: Settings, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--preset", "huge"]) == 2
    assert "quick" in capsys.readouterr().err


def test_missing_data_says_where_to_point(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", "--preset", "quick", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "SONOLAKE_DATA_DIR" in capsys.readouterr().err
