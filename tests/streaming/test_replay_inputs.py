"""What a newcomer types into ``sonolake replay``: a base URL, ``--limit K``, a broken manifest."""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from features.corpus import DataMissing, read_manifest
from sonolake.cli import main
from streaming.replay import listen_url, replay, sample_clips


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765/v1/listen"),
        ("ws://127.0.0.1:8765/", "ws://127.0.0.1:8765/v1/listen"),
        ("http://gw:80", "ws://gw:80/v1/listen"),
        ("https://gw", "wss://gw/v1/listen"),
        ("127.0.0.1:8765", "ws://127.0.0.1:8765/v1/listen"),
        ("wss://gw/speech/v1/listen", "wss://gw/speech/v1/listen"),
    ],
)
def test_listen_url_completes_a_base_url(typed: str, meant: str) -> None:
    assert listen_url(typed) == meant


def test_listen_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="ws://HOST:PORT/v1/listen"):
        listen_url("ftp://gw/")


def test_a_limited_replay_is_a_representative_sample(shared_data: Path) -> None:
    clips = read_manifest(shared_data / "speech_commands" / "manifest.csv")
    assert clips[0].label == clips[23].label, "the manifest is sorted by label"
    sample = sample_clips(clips, 24, seed=0)
    labels = Counter(clip.label for clip in sample)
    assert len(sample) == 24 and len(labels) == 12 and set(labels.values()) == {2}
    assert sample == sample_clips(clips, 24, seed=0), "the same seed picks the same clips"
    assert sample != sample_clips(clips, 24, seed=1)

    fsdd = read_manifest(shared_data / "fsdd" / "manifest.csv")
    speakers = {clip.speaker for clip in sample_clips(fsdd, 20, seed=0)}
    assert len(speakers) > 1, "speakers take turns within a label"


def test_replay_accepts_the_gateway_base_url(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    gateway = make_gateway()
    manifest = _manifest(shared_data, tmp_path, rows=2)
    report = asyncio.run(
        replay(manifest, url=f"ws://127.0.0.1:{gateway.port}", speed=20.0, token="test-token")
    )
    assert report.errors == [] and report.sessions == 1
    assert report.chunks_acked == report.chunks_sent > 0


def test_replay_names_the_route_when_pointed_at_a_page(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    gateway = make_gateway()
    manifest = _manifest(shared_data, tmp_path, rows=1)
    report = asyncio.run(
        replay(manifest, url=f"ws://127.0.0.1:{gateway.port}/healthz", token="test-token")
    )
    assert report.sessions == 0
    assert report.errors and "use ws://HOST:PORT/v1/listen" in report.errors[0]


def test_missing_recording_is_a_clear_input_error(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(shared_data, tmp_path, rows=1, extra="nowhere/clip.wav")
    with pytest.raises(DataMissing, match=r"nowhere/clip\.wav"):
        asyncio.run(replay(manifest, url="ws://127.0.0.1:9/v1/listen"))
    code = main(["replay", "--manifest", str(manifest), "--url", "ws://127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not found" in err and "data root" in err and "Traceback" not in err


def _manifest(shared_data: Path, tmp_path: Path, *, rows: int, extra: str | None = None) -> Path:
    clips = [c for c in read_manifest(shared_data / "fsdd" / "manifest.csv")][:rows]
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker", "sample_rate"])
        for clip in clips:
            writer.writerow([clip.path, clip.label, clip.speaker, clip.sample_rate])
        if extra is not None:
            writer.writerow([extra, "0", "nobody", 8000])
    return path
