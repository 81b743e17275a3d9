"""`sonolake evaluate / promote / rollback / models` end to end, in process, on real files."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from serving_bundles import tone_windows

from features.corpus import write_wav
from lake_schemas import MODEL_EVALUATIONS
from sonolake import wiring
from sonolake.cli import main
from sonolake.settings import Settings


@pytest.fixture
def cli_settings(
    settings: Settings, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The test's isolated settings, on the shared MLflow store under a model name of its own."""
    monkeypatch.setenv("SONOLAKE_MLFLOW_URI", mlflow_store)
    monkeypatch.setenv("SONOLAKE_MODEL_NAME", f"kws-{uuid.uuid4().hex[:8]}")
    return Settings(_env_file=None)


@pytest.fixture
def tone_manifest(tmp_path: Path) -> Path:
    """A labelled audio set on disk: PCM16 WAVs of the tones and a manifest CSV."""
    folder = tmp_path / "tones"
    folder.mkdir()
    windows, labels = tone_windows(3, seed=77)
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker", "sample_rate"])
        for i, (window, label) in enumerate(zip(windows, labels, strict=True)):
            write_wav(folder / f"{i:03d}.wav", (window * 32767).astype(np.int16), 16000)
            writer.writerow([f"tones/{i:03d}.wav", label, f"spk{i % 5}", 16000])
    return folder / "manifest.csv"


def run(*args: str) -> int:
    return main(list(args))


def said(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(stdout, stderr) with Rich's line wrapping undone."""
    captured = capsys.readouterr()
    return " ".join(captured.out.split()), " ".join(captured.err.split())


def test_lifecycle_through_the_cli(
    cli_settings: Settings,
    tone_manifest: Path,
    weak_bundle: Path,
    good_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = ("--manifest", str(tone_manifest), "--all-clips")
    assert run("models") == 0
    assert "no versions" in said(capsys)[0]

    assert run("evaluate", "--manifest", str(tmp_path / "nope.csv")) == 2
    assert "nope.csv not found" in said(capsys)[1]
    assert run("evaluate", *data, "--model", "champion") == 2
    assert "neither an alias" in said(capsys)[1]

    registry = wiring.registry(cli_settings)
    weak = registry.log_bundle(weak_bundle, {}, {"accuracy": 0.66})
    good = registry.log_bundle(good_bundle, {}, {"accuracy": 1.0})

    assert run("promote", "--version", weak, *data, "--budget-us", "1e6") == 0
    assert f"promoted version {weak}" in said(capsys)[0]
    assert run("promote", *data, "--budget-us", "0.001") == 1  # the challenger, too slow
    out, err = said(capsys)
    assert "exceeds the budget" in out and f"version {good} was not promoted" in err
    assert run("promote", *data, "--budget-us", "1e6") == 0
    assert f"(previous: {weak})" in said(capsys)[0]

    report = tmp_path / "eval.json"
    assert run("evaluate", *data, "--model", "champion", "--json", str(report)) == 0
    printed = said(capsys)[0]
    assert f"version {good}" in printed and "per-class F1" in printed
    result = json.loads(report.read_text())
    assert result["model_version"] == good and result["artifact"] == "int8"
    assert result["accuracy"] > 0.9 and len(result["per_class_f1"]) == 12
    assert run("evaluate", *data, "--model", str(weak_bundle), "--artifact", "fp32") == 0
    assert "local-" in said(capsys)[0]

    assert run("rollback") == 0
    assert f"champion is version {weak} again" in said(capsys)[0]
    assert run("rollback") == 2
    assert "no previous champion" in said(capsys)[1]

    assert run("models", "--json") == 0
    listed = {row["version"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed[weak]["aliases"] == ["champion"]
    assert listed[good]["aliases"] == ["challenger"]
    assert listed[good]["metrics"]["accuracy"] == 1.0

    lake = wiring.lake(cli_settings)
    rows = lake.read(MODEL_EVALUATIONS).sort_by("evaluated_at").to_pylist()
    assert [r["action"] for r in rows] == [
        "promote",
        "evaluate",
        "reject",
        "evaluate",
        "promote",
        "evaluate",
        "evaluate",
        "rollback",
    ]
    assert rows[-3]["dataset"].startswith("tones/manifest.csv")
