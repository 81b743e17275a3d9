"""From the shell: ``sonolake train`` → ``sonolake promote`` → a gateway serving that version.

Real CLI processes over one isolated state folder (a real SQLite MLflow store, a real lake for
the evaluation records), real recordings, the quick preset with one epoch, and a real
WebSocket connection to ``sonolake gateway`` whose ``Results`` carry the promoted version.
The gate's thresholds are opened wide (policy, set by environment): a one-epoch model is not
meant to be good, only to travel the whole path.

The small variant trains on a real subset of the recordings — a data folder of its own whose
manifest lists a few clips per label and speaker side — the other on every recording. Both are
``slow``: three real CLI processes (each importing JAX or MLflow, the registration logging three
ONNX models) cost about a minute and a half of CPU even on ~250 clips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import REPO_ROOT, ServerProcess, free_port

from features.corpus import read_wav
from lake_schemas import MODEL_EVALUATIONS
from models.registry import CHALLENGER, CHAMPION
from sonolake import wiring
from sonolake.settings import Settings

pytestmark = pytest.mark.integration

CHUNK_MS = 100
MODEL_PICKUP_TIMEOUT_S = 120.0
SUBSET_CLIPS_PER_LABEL = 12
"""Clips per label on each side of the speaker split in the fast variant's data folder."""


def _subset_data_dir(shared_data: Path, out: Path) -> Path:
    """A data folder whose Speech Commands manifest lists a few real clips of every label on
    both sides of the speaker split (absolute paths into the shared recordings)."""
    import csv

    from features.corpus import SPEECH_COMMANDS, corpus_manifest, in_test_split

    source = corpus_manifest(shared_data, SPEECH_COMMANDS)
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)
    taken: dict[tuple[str, bool], int] = {}
    chosen = []
    for row in rows:
        side = (row["label"], bool(row["speaker"]) and in_test_split(row["speaker"]))
        if taken.get(side, 0) < SUBSET_CLIPS_PER_LABEL:
            taken[side] = taken.get(side, 0) + 1
            chosen.append({**row, "path": str(shared_data / row["path"])})
    manifest = out / SPEECH_COMMANDS / "manifest.csv"
    manifest.parent.mkdir(parents=True)
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(chosen)
    return out


def _env(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")}
    return env | {
        "SONOLAKE_STATE_DIR": str(settings.state_path),
        "SONOLAKE_LAKE_URI": settings.lake_root,
        "SONOLAKE_DATA_DIR": str(data_dir),
        "SONOLAKE_PROMOTION_ACCURACY_FLOOR": "0",
        "SONOLAKE_PROMOTION_LATENCY_BUDGET_US": "1000000",
        "SONOLAKE_SERVING_POLL_INTERVAL_S": "0.5",
    }


def _sonolake(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sonolake", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def _stream_a_word(port: int, clip: Path) -> list[dict[str, Any]]:
    """One real recording, then silence, then CloseStream; every message the server sent."""
    from websockets.sync.client import connect

    samples, rate = read_wav(clip)
    assert rate == 16_000
    audio = np.concatenate([np.zeros(rate // 2, np.int16), samples, np.zeros(rate, np.int16)])
    step = rate * CHUNK_MS // 1000
    url = (
        f"ws://127.0.0.1:{port}/v1/listen?device_id=shell-test&encoding=linear16&sample_rate=16000"
    )
    messages: list[dict[str, Any]] = []
    with connect(url, open_timeout=30) as ws:
        for start in range(0, audio.size, step):
            ws.send(audio[start : start + step].astype("<i2").tobytes())
        ws.send(json.dumps({"type": "CloseStream"}))
        for raw in ws:
            messages.append(json.loads(raw))
    return messages


@pytest.mark.slow
def test_train_then_promote_then_the_gateway_serves_it(
    settings: Settings, shared_data: Path, tmp_path: Path
) -> None:
    """Every recording: the speaker split as ``sonolake train`` documents it."""
    _train_promote_serve(settings, shared_data, shared_data, tmp_path, min_train_windows=2000)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["quick", "embedding"])
def test_train_promote_serve_on_a_small_real_subset(
    settings: Settings, shared_data: Path, tmp_path: Path, preset: str
) -> None:
    """The same path from the shell on ~250 real clips, for the CNN and for the embedding
    classifier (whose bundle takes audio: the gateway must feed it windows, not log-mel)."""
    data_dir = _subset_data_dir(shared_data, tmp_path / "data")
    _train_promote_serve(
        settings, data_dir, shared_data, tmp_path, min_train_windows=100, preset=preset
    )


def _train_promote_serve(
    settings: Settings,
    data_dir: Path,
    shared_data: Path,
    tmp_path: Path,
    min_train_windows: int,
    preset: str = "quick",
) -> None:
    env = _env(settings, data_dir)
    bundle = tmp_path / "bundle"
    summary_path = tmp_path / "summary.json"
    trained = _sonolake(
        env, "train", "--preset", preset, "--epochs", "1", "--out", str(bundle),
        "--json", str(summary_path),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    printed = " ".join(trained.stdout.split())
    assert "held-out speakers" in printed and "int8" in printed
    summary = json.loads(summary_path.read_text())
    assert summary["test_speakers"] > 5 and summary["train_windows"] > min_train_windows
    version = summary["model_version"]
    assert f"version {version} registered as challenger" in printed

    # the bundle folder: the contract, the metrics of every artifact, the INT8 evaluation
    manifest = json.loads((bundle / "model.json").read_text())
    assert manifest["input_kind"] == ("audio" if preset == "embedding" else "logmel")
    for key in ("accuracy", "macro_f1", "int8_accuracy", "fp16_accuracy", "int8_latency_us_p99"):
        assert key in manifest["metrics"]
    assert manifest["metrics"]["accuracy"] == summary["metrics"]["accuracy"]
    assert (bundle / "confusion.png").is_file() and (bundle / "evaluation.json").is_file()

    # the registry: the same run the Dagster asset logs (params, metrics, curves, artifacts)
    registry = wiring.registry(settings)
    assert registry.alias_version(CHALLENGER) == version
    run_id = registry.client.get_model_version(registry.model_name, version).run_id
    assert run_id is not None
    run = registry.client.get_run(run_id)
    assert run.data.params["preset"] == preset and run.data.params["heldout_dataset"]
    assert run.data.metrics["int8_accuracy"] == manifest["metrics"]["int8_accuracy"]
    for curve in ("train_loss", "train_accuracy", "heldout_accuracy"):
        points = registry.client.get_metric_history(run_id, curve)
        assert [point.step for point in points] == [1], curve
    logged = {a.path for a in registry.client.list_artifacts(run_id, "evaluation")}
    assert logged == {"evaluation/confusion.png", "evaluation/evaluation.json"}

    promoted = _sonolake(env, "promote")
    assert promoted.returncode == 0, promoted.stdout[-2000:] + promoted.stderr[-2000:]
    assert f"promoted version {version}" in " ".join(promoted.stdout.split())
    assert registry.alias_version(CHAMPION) == version
    rows = wiring.lake(settings).read(MODEL_EVALUATIONS).to_pylist()
    assert [(r["action"], r["model_version"]) for r in rows] == [("promote", version)]
    assert rows[0]["dataset"] == summary["heldout_dataset"], "trained and gated on one set"

    port = free_port()
    gateway = ServerProcess(
        [sys.executable, "-m", "sonolake", "gateway", "--port", str(port)],
        port,
        env=env,
        log_path=tmp_path / "gateway.log",
        ready_timeout_s=120,
    )
    with gateway:
        deadline = time.monotonic() + MODEL_PICKUP_TIMEOUT_S
        while _health(port).get("model_version") != version:
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-2000:]
            time.sleep(0.5)
        clip = sorted((shared_data / "speech_commands" / "yes").glob("*.wav"))[0]
        messages = _stream_a_word(port, clip)
    assert messages[0]["type"] == "Metadata" and messages[0]["model_version"] == version
    results = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert results, [m["type"] for m in messages]
    assert {r["model_version"] for r in results} == {version}
