"""Synthetic sessions for the sidecar tests: speech-like bursts the real VAD hears as speech.

A burst is a voiced vowel (a 120 Hz glottal pulse train through two formants, with a gentle
pitch wobble and a raised-cosine envelope); Silero scores it ~0.9 while it scores silence and
pure tones ~0. Bursts sit between long silences. Each burst also gets the records the gateway
spools for it — an interim ``result`` half-way and the ``utterance`` (with its final result)
300 ms after it ends — so each burst is exactly one silver event and two gold predictions
however the session's records are split across micro-batches.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from features.pcm import encode_mulaw
from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, PREDICTIONS, SESSIONS, Lake
from streaming.spool import SpoolRecord, SpoolWriter

SAMPLE_RATE_HZ = 16_000
CHUNK_MS = 100
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MODEL_VERSION = "test-1"


def vowel(duration_s: float, sample_rate: int = SAMPLE_RATE_HZ, seed: int = 0) -> np.ndarray:
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    f0 = 120 + 15 * np.sin(2 * np.pi * 3 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    signal = np.zeros_like(t)
    for k in range(1, 30):
        gain = np.exp(-(((k * 120 - 700) / 400) ** 2)) + 0.5 * np.exp(
            -(((k * 120 - 1200) / 300) ** 2)
        )
        signal += gain / k * np.sin(k * phase)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * t / duration_s))
    out = signal * envelope
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


@dataclass(frozen=True)
class SyntheticSession:
    session_id: str
    device_id: str
    chunks: int
    bursts: int
    label: str
    encoding: str = "linear16"
    sample_rate: int = SAMPLE_RATE_HZ

    def audio(self) -> np.ndarray:
        """``bursts`` 0.6-s vowels, 0.5 s of silence before each and after the last."""
        rate = self.sample_rate
        gap = np.zeros(int(0.5 * rate), dtype=np.float32)
        parts = []
        for index in range(self.bursts):
            parts += [gap, vowel(0.6, rate, seed=index)]
        parts.append(gap)
        audio = np.concatenate(parts)
        total = self.chunks * rate * CHUNK_MS // 1000
        if audio.size > total:
            raise ValueError(f"{self.bursts} bursts need more than {self.chunks} chunks")
        return np.concatenate([audio, np.zeros(total - audio.size, dtype=np.float32)])

    def burst_span_s(self, index: int) -> tuple[float, float]:
        """Where burst ``index`` is audible (its envelope's louder part), in stream seconds."""
        start = 0.5 + 1.1 * index
        return start + 0.1, start + 0.5

    def decisions(self, index: int) -> list[tuple[int, SpoolRecord]]:
        """(seq after which it is spooled, record): the gateway's interim and final result."""
        start_s, end_s = self.burst_span_s(index)
        common = {
            "session_id": self.session_id,
            "device_id": self.device_id,
            "event_time": T0 + timedelta(seconds=start_s),
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "label": self.label,
            "utterance": index + 1,
            "start_sample": int(start_s * SAMPLE_RATE_HZ),
            "predicted_label": self.label,
            "top_k": [{"label": self.label, "score": 0.9}],
            "model_version": MODEL_VERSION,
            "role": "champion",
            "latency_ms": 12.5,
        }
        mid_s = (start_s + end_s) / 2
        last_seq = int((end_s + 0.3) * 1000) // CHUNK_MS
        interim = SpoolRecord.decision(
            final=False,
            **common,
            result_index=2 * index,
            speech_final=False,
            end_sample=int(mid_s * SAMPLE_RATE_HZ),
            score=0.6,
            received_at=T0 + timedelta(seconds=mid_s + 0.05),
        )
        final = SpoolRecord.decision(
            final=True,
            **common,
            result_index=2 * index + 1,
            speech_final=True,
            end_sample=int(end_s * SAMPLE_RATE_HZ),
            score=0.9,
            first_seq=int(start_s * 1000) // CHUNK_MS,
            last_seq=last_seq,
            speech_ratio=0.9,
            end_reason="silence",
            received_at=T0 + timedelta(seconds=end_s + 0.35),
        )
        return [(int(mid_s * 1000) // CHUNK_MS, interim), (last_seq, final)]

    def records(self, *, end: bool = True, dropped_chunks: int = 0) -> list[SpoolRecord]:
        audio = self.audio()
        after: dict[int, list[SpoolRecord]] = {}
        for index in range(self.bursts):
            for seq, record in self.decisions(index):
                after.setdefault(seq, []).append(record)
        pcm16 = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
        per_chunk = self.sample_rate * CHUNK_MS // 1000
        out = []
        for seq in range(self.chunks):
            samples = pcm16[seq * per_chunk : (seq + 1) * per_chunk]
            pcm = samples.tobytes() if self.encoding == "linear16" else encode_mulaw(samples)
            at = T0 + timedelta(milliseconds=seq * CHUNK_MS)
            out.append(
                SpoolRecord.chunk(
                    session_id=self.session_id,
                    device_id=self.device_id,
                    seq=seq,
                    event_time=at,
                    received_at=at + timedelta(milliseconds=20),
                    sample_rate=self.sample_rate,
                    encoding=self.encoding,
                    pcm=pcm,
                    label=self.label,
                )
            )
            out += after.get(seq, [])
        if end:
            out.append(
                SpoolRecord.session_end(
                    session_id=self.session_id,
                    device_id=self.device_id,
                    event_time=T0 + timedelta(milliseconds=self.chunks * CHUNK_MS),
                    received_at=T0 + timedelta(milliseconds=self.chunks * CHUNK_MS + 20),
                    sample_rate=self.sample_rate,
                    encoding=self.encoding,
                    meta_json=f'{{"chunks": {self.chunks}, "dropped_chunks": {dropped_chunks}}}',
                )
            )
        return out


def sessions(
    n: int, *, chunks: int = 30, bursts: int = 2, prefix: str = "s"
) -> list[SyntheticSession]:
    labels = ("yes", "no", "up", "down")
    return [
        SyntheticSession(f"{prefix}{i}", f"spk-{i % 3}", chunks, bursts, labels[i % len(labels)])
        for i in range(n)
    ]


def interleave(per_session: Iterable[list[SpoolRecord]]) -> list[SpoolRecord]:
    """Records in arrival order: sessions stream side by side, chunk by chunk."""
    lists = [list(r) for r in per_session]
    out = []
    for step in range(max(len(r) for r in lists)):
        out += [r[step] for r in lists if step < len(r)]
    return out


def write_spool(spool_dir: Path, records: list[SpoolRecord], *, per_segment: int) -> None:
    """Append records with a real SpoolWriter, sealing a segment every ``per_segment`` records."""

    async def run() -> None:
        async with SpoolWriter(spool_dir, max_segment_age_s=3600) as writer:
            for start in range(0, len(records), per_segment):
                await asyncio.gather(
                    *(writer.append(r) for r in records[start : start + per_segment])
                )
                await writer.seal()

    asyncio.run(run())


def assert_landed_exactly_once(
    lake: Lake, expected: list[SyntheticSession], *, other_sessions: frozenset[str] = frozenset()
) -> None:
    """Bronze holds every chunk once; silver every burst once; sessions add up
    (``other_sessions``: rows silver.sessions held before, left out of the check)."""
    bronze = lake.read(AUDIO_CHUNKS, columns=["session_id", "seq"])
    keys = list(zip(bronze["session_id"].to_pylist(), bronze["seq"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "a chunk landed twice"
    assert set(keys) == {(s.session_id, q) for s in expected for q in range(s.chunks)}
    events = lake.read(AUDIO_EVENTS)
    ids = events["event_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a segment landed twice"
    per_session = Counter(events["session_id"].to_pylist())
    assert per_session == {s.session_id: s.bursts for s in expected if s.bursts}
    predictions = lake.read(PREDICTIONS, columns=["prediction_id", "event_id", "is_final"])
    keys = predictions["prediction_id"].to_pylist()
    assert len(keys) == len(set(keys)), "a prediction landed twice"
    assert len(keys) == 2 * sum(s.bursts for s in expected)
    finals = [
        e
        for e, f in zip(
            predictions["event_id"].to_pylist(), predictions["is_final"].to_pylist(), strict=True
        )
        if f
    ]
    assert sorted(finals) == sorted(ids), "every final result is one silver event"
    by_session = {r["session_id"]: r for r in lake.read(SESSIONS).to_pylist()}
    assert set(by_session) - other_sessions == {s.session_id for s in expected}
    for s in expected:
        row = by_session[s.session_id]
        assert (row["chunks"], row["events"]) == (s.chunks, s.bursts), row
        assert row["audio_s"] == pytest.approx(s.chunks * 0.1)


def process_env(bytecode_cache: Path, **settings: str) -> dict[str, str]:
    """The environment for a child process: no inherited SONOLAKE_* values, these instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
    env.update({f"SONOLAKE_{k.upper()}": v for k, v in settings.items()})
    return env
