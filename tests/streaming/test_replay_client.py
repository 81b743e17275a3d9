"""The replay client: one session per speaker, native rates, labels, and an honest report."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import pytest

from features.corpus import read_manifest
from streaming.replay import device_id_for, replay
from streaming.spool import KIND_CHUNK, KIND_SESSION_END

pytestmark = pytest.mark.integration


def _manifest(shared_data: Path, tmp_path: Path, per_speaker: int = 3) -> Path:
    clips = read_manifest(shared_data / "fsdd" / "manifest.csv")
    chosen = []
    for speaker in ("george", "jackson"):
        chosen += [c for c in clips if c.speaker == speaker][:per_speaker]
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker", "sample_rate"])
        for clip in chosen:
            writer.writerow([clip.path, clip.label, clip.speaker, clip.sample_rate])
    return path


def test_replay_streams_one_session_per_speaker(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    gateway = make_gateway()
    url = f"ws://127.0.0.1:{gateway.port}/v1/listen"
    report = asyncio.run(
        replay(
            _manifest(shared_data, tmp_path),
            url=url,
            streams=2,
            speed=8.0,
            labels=True,
            token="test-token",
        )
    )
    assert report.errors == []
    assert report.sessions == 2 and report.clips == 6 and report.labelled_clips == 6
    assert report.close_codes == {"1000": 2}
    assert report.chunks_acked == report.chunks_sent > 0
    assert report.final_results >= 5 and report.detected_clips >= 5
    assert report.model_loaded is False and report.accuracy is None
    assert report.latency_ms_p50 is not None and report.latency_ms_p99 is not None
    summary = report.as_dict()
    assert summary["accuracy"] is None and "latencies_ms" not in summary

    rows = gateway.stored().to_pylist()
    chunks = [r for r in rows if r["kind"] == KIND_CHUNK]
    assert len(chunks) == report.chunks_sent
    assert {r["device_id"] for r in chunks} == {"spk-george", "spk-jackson"}
    assert {r["sample_rate"] for r in chunks} == {8000}, "FSDD is sent at its native 8 kHz"
    assert {r["label"] for r in chunks} >= {"0"}, "chunks carry the clip's ground truth"
    assert len([r for r in rows if r["kind"] == KIND_SESSION_END]) == 2


def test_replay_reports_refusals(make_gateway: Any, shared_data: Path, tmp_path: Path) -> None:
    gateway = make_gateway()
    report = asyncio.run(
        replay(
            _manifest(shared_data, tmp_path, per_speaker=1),
            url=f"ws://127.0.0.1:{gateway.port}/v1/listen",
            streams=2,
            token="wrong",
        )
    )
    assert report.sessions == 2 and report.close_codes == {"1008": 2}
    assert any("unauthorized" in error for error in report.errors)


def test_device_ids_follow_the_replay_convention() -> None:
    assert device_id_for("george") == "spk-george"
    assert device_id_for("a b/c") == "spk-a-b-c"
    assert len(device_id_for("x" * 100)) == 64
