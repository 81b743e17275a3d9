"""A small real lake for the tests that read one: real recordings, landed by the real sidecar.

Clips are written to a spool the way the gateway writes them (100 ms chunks at the clip's
rate, a ``Label`` per clip, 700 ms of silence after each clip, one session per speaker with
the device id the replay tool gives it, the utterances the gateway's own segmenter finds in
them — :func:`streaming.reprocess.utterance_records`, no model, as a gateway without one —
and a ``session_end`` record with totals), then the sidecar lands the spool into bronze,
silver and gold.predictions. Nothing here fakes a table: what the assets
and the lake readers read is what the production path writes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.corpus import (
    FSDD,
    SPEECH_COMMANDS,
    Clip,
    corpus_manifest,
    in_test_split,
    read_manifest,
    read_wav,
)
from features.pcm import encode_mulaw
from lake_schemas import Lake
from sonolake import wiring
from sonolake.settings import Settings
from streaming.replay import device_id_for, group_by_speaker
from streaming.reprocess import utterance_records
from streaming.sidecar.driver import Sidecar, SidecarConfig
from streaming.spool import SpoolRecord, SpoolWriter, records_to_batch

CHUNK_MS = 100
GAP_MS = 700


def _session_records(
    speaker: str, clips: Sequence[Clip], start: datetime, encoding: str
) -> list[SpoolRecord]:
    session_id = uuid.uuid4().hex
    device_id = device_id_for(speaker)
    rate = read_wav(clips[0].path)[1]
    chunk = rate * CHUNK_MS // 1000
    gap = np.zeros(rate * GAP_MS // 1000, dtype=np.int16)
    records: list[SpoolRecord] = []
    position = 0
    for clip in clips:
        samples, clip_rate = read_wav(clip.path)
        assert clip_rate == rate, "one session streams one rate"
        stream = np.concatenate([samples, gap])
        for offset in range(0, stream.size, chunk):
            piece = stream[offset : offset + chunk]
            pcm = encode_mulaw(piece) if encoding == "mulaw" else piece.astype("<i2").tobytes()
            at = start + timedelta(microseconds=position * 1_000_000 // rate)
            records.append(
                SpoolRecord.chunk(
                    session_id=session_id,
                    device_id=device_id,
                    seq=len(records),
                    event_time=at,
                    sample_rate=rate,
                    encoding=encoding,
                    pcm=pcm,
                    label=clip.label,
                    received_at=at + timedelta(milliseconds=15),
                )
            )
            position += piece.size
    records += _decisions(records)
    end = start + timedelta(microseconds=position * 1_000_000 // rate)
    records.append(
        SpoolRecord.session_end(
            session_id=session_id,
            device_id=device_id,
            event_time=end,
            sample_rate=rate,
            encoding=encoding,
            meta_json=json.dumps({"chunks": len(records), "dropped_chunks": 0}),
            received_at=end,
        )
    )
    return records


def _decisions(chunks: list[SpoolRecord]) -> list[SpoolRecord]:
    """The utterance records the gateway would spool for these chunks (no model loaded)."""
    table = pa.Table.from_batches([records_to_batch(chunks)])
    width = 2 if chunks[0].encoding == "linear16" else 1
    table = table.append_column(
        "num_samples", pc.divide(pc.binary_length(table.column("pcm")), width)
    )
    found, _ = utterance_records(table)
    rows = found.to_pylist()
    for row in rows:
        row["role"] = "champion"
    return [SpoolRecord(**row) for row in rows]


async def _write_spool(spool_dir: Path, records: list[SpoolRecord]) -> None:
    writer = SpoolWriter(spool_dir, max_segment_age_s=3600.0)
    await writer.start()
    try:
        for record in records:
            await writer.append(record)
    finally:
        await writer.close()


def land_clips(
    settings: Settings,
    clips: Sequence[Clip],
    *,
    encoding: str = "linear16",
    start: datetime | None = None,
) -> Lake:
    """Spool the clips (one session per speaker) and land them with the sidecar."""
    start = start or datetime.now(UTC) - timedelta(minutes=30)
    records: list[SpoolRecord] = []
    for speaker, group in group_by_speaker(clips):
        records += _session_records(speaker, group, start, encoding)
    asyncio.run(_write_spool(settings.spool_path, records))
    lake = wiring.lake(settings)
    sidecar = Sidecar(
        lake,
        SidecarConfig(spool_dir=settings.spool_path, state_dir=settings.state_path / "sidecar"),
    )
    while sidecar.land_once() is not None:
        pass
    return lake


def _varied(group: Sequence[Clip], n: int) -> list[Clip]:
    """Up to ``n`` clips of one speaker, as many different labels as possible (deterministic)."""
    by_label: dict[str, list[Clip]] = {}
    for clip in sorted(group, key=lambda c: c.path):
        by_label.setdefault(clip.label, []).append(clip)
    chosen: list[Clip] = []
    while len(chosen) < n and any(by_label.values()):
        for label in sorted(by_label):
            if by_label[label] and len(chosen) < n:
                chosen.append(by_label[label].pop(0))
    return chosen


def small_lake_clips(
    data_dir: Path,
    train_speakers: int = 9,
    heldout_speakers: int = 3,
    per_speaker: int = 8,
    silence_clips: int = 6,
) -> list[Clip]:
    """Real Speech Commands clips: speakers on both sides of the split, varied labels, noise.

    Speakers are chosen by the hash the training split applies to their devices, so the
    held-out side is never empty; ``_silence_`` clips (no speaker: one device each) give the
    silence class.
    """
    clips = read_manifest(corpus_manifest(data_dir, SPEECH_COMMANDS))
    groups = group_by_speaker([c for c in clips if c.label != "_silence_"])
    groups.sort(key=lambda g: (-len({c.label for c in g[1]}), g[0]))
    held = {s: in_test_split(device_id_for(s)) for s, _ in groups}
    train = [g for s, g in groups if not held[s]][:train_speakers]
    test = [g for s, g in groups if held[s]][:heldout_speakers]
    chosen = [clip for group in train + test for clip in _varied(group, per_speaker)]
    noise = sorted((c for c in clips if c.label == "_silence_"), key=lambda c: c.path)
    return chosen + noise[:silence_clips]


def fsdd_clips(data_dir: Path, per_speaker: int = 12) -> list[Clip]:
    """8 kHz telephone-band digits (a different channel and vocabulary): the drift set."""
    clips = read_manifest(corpus_manifest(data_dir, FSDD))
    return [clip for _, group in group_by_speaker(clips) for clip in _varied(group, per_speaker)]


@dataclass(frozen=True)
class LakeEnv:
    """A state folder and lake root, and the settings that point at them."""

    root: Path

    @property
    def settings(self) -> Settings:
        return isolated_settings(self.root)


def isolated_settings(root: Path, **overrides: object) -> Settings:
    """Settings whose every path is under ``root`` (nothing read from the environment)."""
    values: dict[str, object] = {
        "state_dir": root / "state",
        "lake_uri": str(root / "lakehouse"),
        "data_dir": Path(__file__).resolve().parents[2] / "shared" / "data",
        "mlflow_uri": f"sqlite:///{root / 'state' / 'mlflow.db'}",
        "training_preset": "quick",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def build_small_lake(base: Path, shared_data: Path) -> Path:
    """Land the small set of real clips once under ``base`` (reused when already there)."""
    root = base / "small-lake"
    done = root / ".landed"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        settings = isolated_settings(root)
        land_clips(settings, small_lake_clips(shared_data))
        done.touch()
    return root
