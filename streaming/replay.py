"""Replay WAV files into a gateway as a fleet of devices would, and report what came back.

Recordings are grouped by speaker and each speaker becomes one session with
``device_id = "spk-<speaker>"`` (so a device is a speaker, and training can split by device).
``streams`` sessions run at once; each sends its clips at their native rate in 100 ms chunks,
with a gap of silence after every clip so the endpointer closes an utterance per clip, and
optionally a ``Label`` message with the clip's ground truth before it. With ``realtime`` the
chunks are paced at the speed of speech (``speed`` = 1), with ``speed`` = k at k times that;
unpaced, they go as fast as the socket takes them — faster than live processing can follow,
so expect backpressure drops (counted in the report; the audio is still stored).

The report counts what the gateway said (results, acks, warnings, errors), the chunk → result
latency (from sending the last chunk a result covers to receiving the result), and — when a
model is loaded — how often the final result of a clip matches its label.

Each session streams through :class:`~streaming.client.DeviceClient`, so a replay survives a
gateway restart or a dropped connection: it resumes and resends what was not acknowledged
(``resumes`` and ``resent_chunks`` in the report), and backs off when the gateway is full.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from features.corpus import Clip, DataMissing, read_manifest, read_wav
from features.pcm import encode_mulaw, resample, to_float, to_pcm16
from streaming.client import ClientError, DeviceClient

CHUNK_MS = 100
GAP_MS = 700
"""Silence after each clip (ms): longer than the default 300 ms endpointing plus VAD lag."""
_ID_JUNK = re.compile(r"[^A-Za-z0-9._-]+")


LISTEN_PATH = "/v1/listen"


def listen_url(url: str) -> str:
    """The live endpoint for what a user typed: a base URL gains ``/v1/listen``, http → ws.

    ``ws://127.0.0.1:8765`` and ``http://127.0.0.1:8765/`` both mean the gateway's listen route;
    any other path is kept as given (a proxy may mount the gateway elsewhere).
    """
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"gateway URL {url!r}: use ws://HOST:PORT{LISTEN_PATH} (or wss://)")
    path = parts.path if parts.path not in ("", "/") else LISTEN_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def sample_clips(clips: Sequence[Clip], limit: int, seed: int = 0) -> list[Clip]:
    """A seeded sample of ``limit`` clips, spread over labels first and speakers second.

    Manifests are sorted (all of one label, or one speaker, first), so the first K rows of one
    are no trial of anything. Labels take turns; within a label, speakers take turns; the order
    inside each turn comes from ``seed``, so the same call picks the same clips.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, dict[str, list[Clip]]] = defaultdict(lambda: defaultdict(list))
    for index in rng.permutation(len(clips)):
        clip = clips[int(index)]
        by_label[clip.label][clip.speaker].append(clip)
    queues = [_interleave(list(speakers.values())) for speakers in by_label.values()]
    picked: list[Clip] = []
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


def _interleave(groups: list[list[Clip]]) -> list[Clip]:
    """One clip of each group in turn, until all are used."""
    out: list[Clip] = []
    for turn in range(max((len(g) for g in groups), default=0)):
        out.extend(group[turn] for group in groups if turn < len(group))
    return out


def device_id_for(speaker: str) -> str:
    """``spk-<speaker>`` with characters the protocol refuses replaced (at most 64 chars)."""
    return ("spk-" + _ID_JUNK.sub("-", speaker))[:64]


@dataclass
class ClipOutcome:
    """What happened to one clip: its label and the best final result inside its span."""

    label: str
    start_s: float
    end_s: float
    predicted: str | None = None
    score: float = -1.0


@dataclass
class ReplayReport:
    """The summary of a replay (``as_dict()`` for JSON and the demo)."""

    url: str
    streams: int
    sessions: int = 0
    clips: int = 0
    chunks_sent: int = 0
    chunks_acked: int = 0
    speech_started: int = 0
    interim_results: int = 0
    final_results: int = 0
    labelled_clips: int = 0
    detected_clips: int = 0
    correct_clips: int = 0
    model_loaded: bool = False
    model_versions: list[str] = field(default_factory=list)
    warnings: int = 0
    dropped_chunks: int = 0
    errors: list[str] = field(default_factory=list)
    close_codes: dict[str, int] = field(default_factory=dict)
    resumes: int = 0
    resent_chunks: int = 0
    overloaded_retries: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def accuracy(self) -> float | None:
        """Correct finals / clips with a final result (None without a model or labels)."""
        if not self.model_loaded or not self.detected_clips:
            return None
        return self.correct_clips / self.detected_clips

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latencies_ms")
        data["accuracy"] = self.accuracy
        return data


def group_by_speaker(clips: Sequence[Clip]) -> list[tuple[str, list[Clip]]]:
    """Clips per speaker, speakers in first-seen order (one session each)."""
    groups: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        groups[clip.speaker].append(clip)
    return list(groups.items())


class _Session:
    """One replayed device: sends its clips, collects everything the gateway says."""

    def __init__(
        self,
        report: ReplayReport,
        speaker: str,
        clips: list[Clip],
        *,
        url: str,
        token: str | None,
        speed: float | None,
        labels: bool,
        encoding: str,
        interim_results: bool,
        give_up_after_s: float = 60.0,
    ) -> None:
        self.report = report
        self.give_up_after_s = give_up_after_s
        self.clips = clips
        self.url = url
        self.token = token
        self.speed = speed
        self.labels = labels
        self.encoding = encoding
        self.interim_results = interim_results
        self.device_id = device_id_for(speaker)
        self.sent_at: dict[int, float] = {}
        self.outcomes: list[ClipOutcome] = []
        self.max_ack = -1

    def _audio(self) -> tuple[int, list[tuple[Clip, np.ndarray]]]:
        loaded = [(clip, *read_wav(clip.path)) for clip in self.clips]
        rate = loaded[0][2]
        out = []
        for clip, samples, clip_rate in loaded:
            if clip_rate != rate:
                samples = to_pcm16(resample(to_float(samples), clip_rate, rate))
            out.append((clip, samples))
        return rate, out

    async def run(self) -> None:
        rate, audio = self._audio()
        query = {
            "device_id": self.device_id,
            "encoding": self.encoding,
            "sample_rate": rate,
            "channels": 1,
            "interim_results": str(self.interim_results).lower(),
        }
        client = DeviceClient(
            self.url,
            token=self.token,
            params=query,
            on_message=self._on_message,
            give_up_after_s=self.give_up_after_s,
        )
        try:
            async with client:
                await self._send(client, rate, audio)
                await asyncio.wait_for(client.close_stream(), timeout=60)
        except (ClientError, TimeoutError) as exc:
            if getattr(exc, "close_code", None) is None:
                self.report.errors.append(f"{self.device_id}: {exc}")
                return
        stats = client.stats
        self.report.resumes += stats.resumes
        self.report.resent_chunks += stats.resent_chunks
        self.report.overloaded_retries += stats.overloaded_retries
        self.report.sessions += 1
        key = str(stats.close_code)
        self.report.close_codes[key] = self.report.close_codes.get(key, 0) + 1
        self.report.chunks_acked += self.max_ack + 1
        for outcome in self.outcomes:
            self.report.clips += 1
            if self.labels:
                self.report.labelled_clips += 1
            if outcome.predicted is not None or outcome.score >= 0:
                self.report.detected_clips += 1
                if outcome.predicted is not None and outcome.predicted == outcome.label:
                    self.report.correct_clips += 1

    async def _send(
        self, client: DeviceClient, rate: int, audio: list[tuple[Clip, np.ndarray]]
    ) -> None:
        chunk = rate * CHUNK_MS // 1000
        gap = np.zeros(rate * GAP_MS // 1000, dtype=np.int16)
        seq = 0
        position = 0  # samples sent so far (the stream clock, at the client's rate)
        started = time.perf_counter()
        for clip, samples in audio:
            if self.labels:
                await client.label(clip.label)
            self.outcomes.append(
                ClipOutcome(clip.label, position / rate, (position + samples.size) / rate)
            )
            stream = np.concatenate([samples, gap])
            for start in range(0, stream.size, chunk):
                piece = stream[start : start + chunk]
                payload = encode_mulaw(piece) if self.encoding == "mulaw" else piece.tobytes()
                if self.speed:
                    due = started + position / rate / self.speed
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                self.sent_at[seq] = time.perf_counter()
                await client.send_audio(payload)
                seq += 1
                position += piece.size
                self.report.chunks_sent += 1
        if self.labels:
            await client.label(None)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        report = self.report
        if kind == "Ack":
            self.max_ack = max(self.max_ack, int(message["seq"]))
        elif kind == "Metadata":
            report.model_loaded = report.model_loaded or bool(message.get("model_loaded"))
            totals = message.get("totals")
            if totals:
                report.dropped_chunks += int(totals.get("dropped_chunks", 0))
        elif kind == "SpeechStarted":
            report.speech_started += 1
        elif kind == "Results":
            sent = self.sent_at.get(int(message["last_seq"]))
            if sent is not None:
                report.latencies_ms.append((time.perf_counter() - sent) * 1000)
            version = message.get("model_version")
            if version and version not in report.model_versions:
                report.model_versions.append(version)
            if message["is_final"]:
                report.final_results += 1
                self._score(message)
            else:
                report.interim_results += 1
        elif kind == "Warning":
            report.warnings += 1
        elif kind == "Error":
            report.errors.append(
                f"{self.device_id}: {message.get('code')}: {message.get('message')}"
            )

    def _score(self, result: dict[str, Any]) -> None:
        """Credit a final result to the clip its segment overlaps most (or starts nearest)."""
        start = float(result["start"])
        end = start + float(result["duration"])

        def fit(outcome: ClipOutcome) -> tuple[float, float]:
            overlap = min(end, outcome.end_s) - max(start, outcome.start_s)
            return overlap, -abs(start - outcome.start_s)

        if not self.outcomes:
            return
        outcome = max(self.outcomes, key=fit)
        if fit(outcome)[0] < -GAP_MS / 1000:
            return  # nowhere near any clip (noise between clips)
        score = result["score"] if result["score"] is not None else 0.0
        if score > outcome.score:
            outcome.score = score
            outcome.predicted = result["label"]


async def replay(
    manifest: Path | str,
    *,
    url: str,
    streams: int = 4,
    realtime: bool = False,
    speed: float | None = None,
    labels: bool = False,
    limit: int | None = None,
    seed: int = 0,
    token: str | None = None,
    encoding: str = "linear16",
    interim_results: bool = True,
    data_root: Path | None = None,
    on_session_done: Callable[[], None] | None = None,
    give_up_after_s: float = 60.0,
) -> ReplayReport:
    """Stream a manifest's clips into ``url`` (``ws://host:port/v1/listen``) as devices would.

    ``limit`` replays a representative sample (:func:`sample_clips` with ``seed``), not the
    first rows. Every clip's WAV must exist before anything is sent (:class:`DataMissing`
    names the first missing one and where relative paths were looked up). A session that
    cannot (re)connect for ``give_up_after_s`` is reported as an error.
    """
    url = listen_url(url)
    clips = read_manifest(manifest, data_root)
    if limit is not None:
        clips = sample_clips(clips, limit, seed)
    missing = [clip.path for clip in clips if not clip.path.exists()]
    if missing:
        raise DataMissing(
            f"{len(missing)} recording(s) of {manifest} not found, first {missing[0]}; a relative "
            "path resolves against the data root (--data-root, default: the manifest's "
            "grandparent folder), then the manifest's own folder"
        )
    groups = group_by_speaker(clips)
    report = ReplayReport(url=url, streams=streams)
    queue: asyncio.Queue[tuple[str, list[Clip]]] = asyncio.Queue()
    for group in groups:
        queue.put_nowait(group)

    async def worker() -> None:
        while not queue.empty():
            speaker, speaker_clips = queue.get_nowait()
            session = _Session(
                report,
                speaker,
                speaker_clips,
                url=url,
                token=token,
                speed=1.0 if realtime else speed,
                labels=labels,
                encoding=encoding,
                interim_results=interim_results,
                give_up_after_s=give_up_after_s,
            )
            await session.run()
            if on_session_done is not None:
                on_session_done()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, streams))))
    report.seconds = round(time.perf_counter() - started, 3)
    if report.latencies_ms:
        values = np.asarray(report.latencies_ms)
        report.latency_ms_p50 = round(float(np.percentile(values, 50)), 2)
        report.latency_ms_p99 = round(float(np.percentile(values, 99)), 2)
    return report
