"""``python -m benchmarks vad``: VAD + endpointing per 100 ms chunk, against the model alone.

What is measured: N streams of real speech (Speech Commands words, each followed by a second
of near-silence at about -80 dBFS, as from a device in a quiet room) go through the gateway's
own per-session path — decode PCM16, queue, take 512-sample windows, score them in batches
across streams with the energy gate (round r holds every stream's r-th window, as in the
gateway's VAD loop), feed each endpointer — one 100 ms chunk per stream per tick.
``us_per_chunk`` is process CPU time per tick divided by the streams in it (one ORT thread,
so CPU time is the work). Baseline, on the same audio: the Silero ONNX model alone,
batch 1 with its state carried, i.e. what a per-stream VAD would cost (``vs_library`` < 1
means our path is cheaper than just calling the model).

Compressed input adds a decode step in front of that path: ``<format>_decode_us_per_chunk``
is the CPU time (all threads) of :class:`~streaming.gateway.decode.StreamDecoder` per 100 ms
of audio sent as Ogg Opus, WebM Opus or FLAC cut into equal pieces, output resampled to 16 kHz
PCM16; ``<format>_decode_vs_vad`` relates its mean (total CPU ÷ chunks: a container page
may hold several chunks, so most pieces cost nothing and the median says little) to the VAD
path's own mean cost per chunk.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.harness import BenchResult, percentiles, progress
from features.corpus import corpus_manifest, read_manifest, read_wav
from sonolake.settings import get_settings
from streaming.gateway.decode import StreamDecoder, encode_stream
from streaming.gateway.protocol import ListenParams
from streaming.gateway.session import Session
from streaming.vad import CONTEXT_SAMPLES, WINDOW_SAMPLES, BatchedVad, shared_model

CHUNK_SAMPLES = 1600
"""100 ms at 16 kHz."""
QUIET_GAP_S = 1.0
QUIET_RMS = 1e-4
"""Amplitude of the noise between words (about -80 dBFS)."""


def fleet_audio(streams: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """PCM16 streams of real words and quiet gaps, each starting at a different word."""
    settings = get_settings()
    clips = [
        c
        for c in read_manifest(corpus_manifest(settings.data_dir, "speech_commands"))
        if not c.label.startswith("_")
    ][::40][:40]
    words = [read_wav(c.path)[0] for c in clips]
    rng = np.random.default_rng(seed)
    target = int(seconds * 16_000)
    out = []
    for index in range(streams):
        parts, total, k = [], 0, index
        while total < target:
            gap = (rng.normal(0, QUIET_RMS, int(QUIET_GAP_S * 16_000)) * 32768).astype(np.int16)
            parts += [words[k % len(words)], gap]
            total += words[k % len(words)].size + gap.size
            k += 1
        out.append(np.concatenate(parts)[:target])
    return out


def measure_ours(audio: list[np.ndarray]) -> dict[str, float]:
    vad = BatchedVad()
    sessions = [
        Session(
            f"s{i}",
            ListenParams(device_id=f"d{i}"),
            max_pending_ms=2000,
            max_utterance_ms=10_000,
            credential="benchmark",
            resume_digest="",
        )
        for i in range(len(audio))
    ]
    slots = np.array([vad.open_stream() for _ in sessions], dtype=np.intp)
    ticks = audio[0].size // CHUNK_SAMPLES
    per_chunk_us: list[float] = []
    utterances = 0
    with progress() as bar:
        task = bar.add_task("VAD + endpointing", total=ticks)
        for tick in range(ticks):
            span = slice(tick * CHUNK_SAMPLES, (tick + 1) * CHUNK_SAMPLES)
            started = time.process_time()
            for session, samples in zip(sessions, audio, strict=True):
                session.feed(tick, samples[span].tobytes())
            taken = [s.take_windows() for s in sessions]
            for r in range(max(len(t) for t in taken)):
                rows = [i for i, t in enumerate(taken) if len(t) > r]
                probs = vad.process(slots[rows], np.stack([taken[i][r][0] for i in rows]))
                for i, prob in zip(rows, probs.tolist(), strict=True):
                    window, window_end, seq = taken[i][r]
                    event, _ = sessions[i].on_window(window, prob, window_end, seq)
                    utterances += event is not None and event.kind == "start"
            per_chunk_us.append((time.process_time() - started) * 1e6 / len(sessions))
            bar.advance(task)
    cpu_s = sum(per_chunk_us) * len(sessions) / 1e6
    audio_s = ticks * len(sessions) * CHUNK_SAMPLES / 16_000
    pct = percentiles(per_chunk_us, 50, 99)
    total_windows = vad.windows_scored + vad.windows_gated
    return {
        "us_per_chunk_p50": pct["p50"],
        "us_per_chunk_p99": pct["p99"],
        "us_per_chunk_mean": float(np.mean(per_chunk_us)),
        "realtime_factor": audio_s / cpu_s,
        "model_window_fraction": vad.windows_scored / max(1, total_windows),
        "utterances": float(utterances),
    }


def measure_model_alone(audio: list[np.ndarray]) -> dict[str, float]:
    """The Silero model called alone, batch 1, state carried: cost per 100 ms of audio."""
    model = shared_model()
    per_chunk_us: list[float] = []
    for samples in audio:
        floats = samples.astype(np.float32) / 32768.0
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros((1, CONTEXT_SAMPLES), np.float32)
        n_windows = floats.size // WINDOW_SAMPLES
        started = time.process_time()
        for w in range(n_windows):
            window = floats[None, w * WINDOW_SAMPLES : (w + 1) * WINDOW_SAMPLES]
            _, state = model.run(np.concatenate([context, window], axis=1), state)
            context = window[:, -CONTEXT_SAMPLES:]
        chunks = n_windows * WINDOW_SAMPLES / CHUNK_SAMPLES
        per_chunk_us.append((time.process_time() - started) * 1e6 / chunks)
    pct = percentiles(per_chunk_us, 50, 99)
    return {"us_per_chunk_p50": pct["p50"], "us_per_chunk_p99": pct["p99"]}


DECODE_FORMATS = {
    "ogg_opus": ("ogg", "libopus"),
    "webm_opus": ("webm", "libopus"),
    "flac": ("flac", "flac"),
}


def measure_decode(audio: list[np.ndarray]) -> dict[str, float]:
    """CPU µs to decode 100 ms of audio per compressed format (each stream cut in 100 ms pieces)."""
    metrics: dict[str, float] = {}
    for name, (container, codec) in DECODE_FORMATS.items():
        per_chunk_us: list[float] = []
        for samples in audio:
            data = encode_stream(samples, 16_000, container, codec)
            chunks = samples.size // CHUNK_SAMPLES
            step = -(-len(data) // chunks)
            decoder = StreamDecoder(16_000, container if container != "webm" else "matroska")
            decoded = 0
            for start in range(0, len(data), step):
                started = time.process_time()
                decoded += len(decoder.feed(data[start : start + step]))
                per_chunk_us.append((time.process_time() - started) * 1e6)
            decoded += len(decoder.close())
            assert decoded == samples.size * 2, f"{name}: {decoded} bytes decoded"
        pct = percentiles(per_chunk_us, 50, 99)
        metrics[f"{name}_decode_us_per_chunk_p50"] = pct["p50"]
        metrics[f"{name}_decode_us_per_chunk_p99"] = pct["p99"]
        metrics[f"{name}_decode_us_per_chunk_mean"] = float(np.mean(per_chunk_us))
        metrics[f"{name}_bytes_per_chunk"] = len(data) / chunks
    return metrics


def run(quick: bool) -> BenchResult:
    streams, seconds = (32, 20.0) if quick else (128, 60.0)
    audio = fleet_audio(streams, seconds)
    ours = measure_ours(audio)
    baseline = measure_model_alone(audio[: max(4, streams // 8)])
    decode = measure_decode(audio[: 4 if quick else 16])
    ours.update(decode)
    return BenchResult(
        benchmark="vad",
        params={
            "streams": streams,
            "seconds_per_stream": seconds,
            "chunk_ms": 100,
            "gate_dbfs": BatchedVad().gate_dbfs,
            "audio": "Speech Commands words + 1 s gaps at about -80 dBFS",
        },
        metrics=ours,
        baseline=baseline,
        ratios={
            "vs_library": ours["us_per_chunk_p50"] / baseline["us_per_chunk_p50"],
            **{
                f"{name}_decode_vs_vad": decode[f"{name}_decode_us_per_chunk_mean"]
                / ours["us_per_chunk_mean"]
                for name in DECODE_FORMATS
            },
        },
    )
