"""``sidecar``: spool (audio + the gateway's decisions) → Beam landing pipeline → Delta bronze,
silver and gold.predictions, exactly once.

Two phases, synthetic audio (content does not matter beyond "some speech, mostly quiet"):
each stream sends 100-ms chunks of 16 kHz PCM16 (3,200 bytes) with a 0.6-s voiced burst every
4 s over a -70 dBFS noise floor, and, as the gateway does, spools its decisions: an interim
``result`` half-way through each burst and an ``utterance`` (with its final result) 300 ms
after it, so the dedup, the levels, the silver events and the predictions all do real work.

1. **Throughput** — the spool is filled first (streams × seconds of chunks), then the sidecar
   lands it all in micro-batches that grow with the backlog (the driver's defaults: caps
   ``max_batch_bytes`` 256 MiB, the next batch's pipeline run while a batch commits):
   ``chunks_per_s``, ``mb_per_s`` (PCM bytes), CPU per chunk. The CPU split by phase
   (``cpu_us_per_chunk_pipeline`` …) comes from a second landing of a copy of the same spool
   one batch at a time, since the measured run's phases overlap.
   Then ``duplicates`` (bronze rows beyond one per key) and ``lost`` (spooled chunks missing)
   are counted in the lake. Baseline in the same run: plain ``deltalake.write_deltalake`` of
   the same bronze rows in the same number of commits; ``throughput_vs_plain_write`` = our
   chunks/s ÷ plain chunks/s (goal ≥ 0.8 — the plain write does no decoding, dedup, VAD,
   silver rows, staging or exactly-once bookkeeping).
2. **Lag** — a separate writer process appends in real time (streams × 10 chunks/s, group
   committed, segments sealed every second as the gateway does) while the sidecar polls;
   ``lag_s_p50/p99`` = when the chunk's bronze commit finished minus when the chunk was made
   durable (its ``received_at``, stamped just before its group's fsync). Goal: p99 ≤ 5 s at
   1,000 streams.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.harness import BenchResult, cpu_seconds, percentiles, progress

CHUNK_MS = 100
SAMPLE_RATE_HZ = 16_000
CHUNK_SAMPLES = SAMPLE_RATE_HZ * CHUNK_MS // 1000
CHUNK_BYTES = CHUNK_SAMPLES * 2
BURST_CHUNKS = (10, 16)
"""Chunks of the 4-s pattern the burst spans (1.0–1.6 s)."""
INTERIM_AFTER, FINAL_AFTER = 13, 19
"""Pattern chunks after which the interim and the final result are spooled."""
PATTERN_S = 4.0
"""Each stream repeats a 4-s pattern: one 0.6-s voiced burst, the rest a quiet noise floor."""
QUICK = {"tp_streams": 200, "tp_seconds": 10, "lag_streams": 300, "lag_seconds": 8}
FULL = {"tp_streams": 1000, "tp_seconds": 10, "lag_streams": 1000, "lag_seconds": 30}
LAG_GOAL_P99_S = 5.0


def _pattern() -> np.ndarray:
    """4 s of int16 audio: noise at about -70 dBFS with a voiced 0.6-s burst at 1 s."""
    rng = np.random.default_rng(7)
    n = int(PATTERN_S * SAMPLE_RATE_HZ)
    audio = rng.normal(0.0, 10 ** (-70 / 20), n)
    t = np.arange(int(0.6 * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    phase = 2 * np.pi * np.cumsum(120 + 15 * np.sin(2 * np.pi * 3 * t)) / SAMPLE_RATE_HZ
    burst = sum(
        np.exp(-(((k * 120 - 700) / 400) ** 2)) / k * np.sin(k * phase) for k in range(1, 30)
    )
    burst = 0.3 * burst * 0.5 * (1 - np.cos(2 * np.pi * t / 0.6)) / np.abs(burst).max()
    start = SAMPLE_RATE_HZ
    audio[start : start + burst.size] += burst
    return np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")


def _chunks_of(pattern: np.ndarray) -> list[bytes]:
    per = pattern.reshape(-1, CHUNK_SAMPLES)
    return [row.tobytes() for row in per]


async def _write_ticks(
    spool: Path, streams: int, seconds: float, *, paced: bool, max_segment_age_s: float
) -> int:
    from streaming.spool import SpoolRecord, SpoolWriter

    chunks = _chunks_of(_pattern())
    ticks = int(seconds * 1000 / CHUNK_MS)
    written = 0
    async with SpoolWriter(
        spool, max_segment_age_s=max_segment_age_s, commit_interval_ms=2.0
    ) as writer:
        began = time.monotonic()
        for tick in range(ticks):
            if paced:
                delay = began + tick * CHUNK_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            now = datetime.now(UTC)
            records = []
            for stream in range(streams):
                position = (tick + stream * 7) % len(chunks)
                records.append(
                    SpoolRecord.chunk(
                        session_id=f"bench-{stream}",
                        device_id=f"dev-{stream % 97}",
                        seq=tick,
                        event_time=now,
                        received_at=now,
                        sample_rate=SAMPLE_RATE_HZ,
                        encoding="linear16",
                        pcm=chunks[position],
                    )
                )
                if position in (INTERIM_AFTER, FINAL_AFTER) and tick >= FINAL_AFTER:
                    records.append(_decision(stream, tick, position, now))
            await asyncio.gather(*(writer.append(r) for r in records))
            written += streams  # chunks (the decisions are not counted as chunks)
    return written


def _decision(stream: int, tick: int, position: int, now: datetime) -> Any:
    """The gateway's record of the interim or final result for the burst ending near ``tick``."""
    from streaming.spool import SpoolRecord

    final = position == FINAL_AFTER
    cycle = (tick + stream * 7) // int(PATTERN_S * 1000 / CHUNK_MS)
    first_tick = tick - position + BURST_CHUNKS[0]
    start = first_tick * CHUNK_SAMPLES
    end = (tick - position + (BURST_CHUNKS[1] if final else INTERIM_AFTER)) * CHUNK_SAMPLES
    extra = (
        {"first_seq": first_tick, "last_seq": tick, "speech_ratio": 0.9, "end_reason": "silence"}
        if final
        else {}
    )
    return SpoolRecord.decision(
        final=final,
        session_id=f"bench-{stream}",
        device_id=f"dev-{stream % 97}",
        event_time=now,
        received_at=now,
        sample_rate=SAMPLE_RATE_HZ,
        encoding="linear16",
        utterance=cycle + 1,
        result_index=2 * cycle + (1 if final else 0),
        speech_final=final,
        start_sample=start,
        end_sample=end,
        predicted_label="yes",
        score=0.9,
        top_k=[{"label": "yes", "score": 0.9}, {"label": "no", "score": 0.05}],
        model_version="1",
        role="champion",
        latency_ms=8.0,
        **extra,
    )


def _paced_writer(spool: str, streams: int, seconds: float, result: Any) -> None:
    """Runs in its own process: a gateway's worth of real-time appends."""
    result.value = asyncio.run(
        _write_ticks(Path(spool), streams, seconds, paced=True, max_segment_age_s=1.0)
    )


def _sidecar(
    root: Path,
    *,
    on_phase: Any = None,
    max_segments: int = 256,
    dask_scheduler: str | None = None,
    pipeline_ahead: bool = True,
) -> Any:
    """The driver with its default batch caps (batches grow with the backlog);
    ``dask_scheduler``: run each batch on that Dask cluster (benchmarks/sidecar_dask.py);
    ``pipeline_ahead`` off: one batch at a time, so CPU can be split by phase."""
    from lake_schemas import Lake
    from streaming.sidecar.driver import Sidecar, SidecarConfig

    config = SidecarConfig(
        spool_dir=root / "spool",
        state_dir=root / "state",
        retention_s=3600.0,
        max_segments_per_batch=max_segments,
        dask_scheduler=dask_scheduler,
        pipeline_ahead=pipeline_ahead,
    )
    return Sidecar(Lake(root / "lake"), config, on_phase=on_phase)


def _count_landed(root: Path, expected: int) -> dict[str, int]:
    from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, PREDICTIONS, Lake

    lake = Lake(root / "lake")
    keys = lake.read(AUDIO_CHUNKS, columns=["session_id", "seq"])
    unique = keys.group_by(["session_id", "seq"]).aggregate([]).num_rows
    predictions = (
        lake.read(PREDICTIONS, columns=["prediction_id"]) if lake.exists(PREDICTIONS) else None
    )
    return {
        "rows": keys.num_rows,
        "duplicates": keys.num_rows - unique,
        "lost": expected - unique,
        "events": lake.read(AUDIO_EVENTS, columns=["event_id"]).num_rows
        if lake.exists(AUDIO_EVENTS)
        else 0,
        "predictions": predictions.num_rows if predictions is not None else 0,
    }


def _throughput(
    root: Path, streams: int, seconds: float, dask_scheduler: str | None = None
) -> dict[str, Any]:
    expected = asyncio.run(
        _write_ticks(root / "spool", streams, seconds, paced=False, max_segment_age_s=0.5)
    )
    from streaming.spool import sealed_segments

    segments = len(sealed_segments(root / "spool"))
    landing_cpu = _landing_alone(root / "spool")
    shutil.copytree(root / "spool", root / "split" / "spool")
    sidecar = _sidecar(root, dask_scheduler=dask_scheduler)
    batches, cpu0, wall0 = 0, cpu_seconds(), time.perf_counter()
    while sidecar.land_once() is not None:
        batches += 1
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    counts = _count_landed(root, expected)
    split = _split_by_phase(root / "split", dask_scheduler)
    split["landing_columnar"] = landing_cpu
    split["beam_overhead"] = split["pipeline"] - landing_cpu
    return {
        "split_cpu_s": split,
        "chunks": expected,
        "segments": segments,
        "batches": batches,
        "wall_s": wall,
        "cpu_s": cpu,
        **counts,
    }


def _split_by_phase(root: Path, dask_scheduler: str | None) -> dict[str, float]:
    """CPU seconds by phase, from a second landing of the same spool one batch at a time:
    the driver runs the next batch's pipeline while a batch commits, so in the measured run
    the phases overlap and process CPU cannot be told apart by phase."""
    split: dict[str, float] = {"pipeline": 0.0, "commit": 0.0, "plan_and_retire": 0.0}
    marks: dict[str, float] = {}

    def on_phase(phase: str, batch: int) -> None:
        now = cpu_seconds()
        if phase == "pipeline":
            marks["pipeline"] = now
        elif phase == "staged":
            split["pipeline"] += now - marks.pop("pipeline", now)
            marks["commit"] = now
        elif phase == "landed":
            split["commit"] += now - marks.pop("commit", now)

    sidecar = _sidecar(root, on_phase=on_phase, dask_scheduler=dask_scheduler, pipeline_ahead=False)
    cpu0 = cpu_seconds()
    while sidecar.land_once() is not None:
        pass
    split["plan_and_retire"] = cpu_seconds() - cpu0 - split["pipeline"] - split["commit"]
    shutil.rmtree(root, ignore_errors=True)
    return split


def _landing_alone(spool: Path) -> float:
    """CPU seconds of the columnar landing itself (decode, validate, land) over the whole
    spool in plain Python, no Beam: the part of the pipeline that is our own work."""
    from streaming.sidecar import records
    from streaming.sidecar.landing import KEYS_SCHEMA, land
    from streaming.sidecar.levels import STATS_SCHEMA
    from streaming.spool import sealed_segments

    payloads = [(s.name, s.path.read_bytes()) for s in sealed_segments(spool)]
    cpu0 = cpu_seconds()
    tables = []
    for name, payload in payloads:
        table, _ = records.decode(name, payload)
        if table is not None:
            tables.append(records.validate(table)[0])
    land(pa.concat_tables(tables), KEYS_SCHEMA.empty_table(), STATS_SCHEMA.empty_table())
    return cpu_seconds() - cpu0


def _plain_write(root: Path, batches: int) -> dict[str, float]:
    """Baseline: the same bronze rows, written with write_deltalake in as many commits."""
    from deltalake import write_deltalake

    from lake_schemas import AUDIO_CHUNKS, Lake

    rows = Lake(root / "lake").read(AUDIO_CHUNKS)
    rows = rows.cast(AUDIO_CHUNKS.schema)
    step = -(-rows.num_rows // max(1, batches))
    target = str(root / "plain")
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for start in range(0, rows.num_rows, step):
        write_deltalake(
            target, rows.slice(start, step), mode="append", partition_by=["ingest_date"]
        )
    return {
        "chunks": rows.num_rows,
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": cpu_seconds() - cpu0,
    }


def _lag(root: Path, streams: int, seconds: float) -> dict[str, Any]:
    """Real-time writer in another process; the sidecar lands while it writes."""
    lags: list[np.ndarray] = []
    batch_seconds: list[float] = []
    started: dict[int, float] = {}

    def on_phase(phase: str, batch: int) -> None:
        now = time.time()
        if phase == "pipeline":
            started[batch] = time.perf_counter()
        elif phase == "committed:bronze.audio_chunks":
            from streaming.sidecar.staging import read_parts

            staged = root / "state" / "batches" / f"{batch:012d}"
            table = read_parts(staged, "bronze", None)
            received = table.column("received_at").cast(pa.int64()).to_numpy()
            lags.append(now - received / 1e6)
        elif phase == "landed" and batch in started:
            batch_seconds.append(time.perf_counter() - started.pop(batch))

    sidecar = _sidecar(root, on_phase=on_phase)
    stop = threading.Event()
    context = multiprocessing.get_context("spawn")
    written = context.Value("q", 0)
    writer = context.Process(
        target=_paced_writer, args=(str(root / "spool"), streams, seconds, written)
    )
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    writer.start()
    landing = threading.Thread(target=sidecar.run, args=(0.1, stop), daemon=True)
    landing.start()
    writer.join()
    writer_wall = time.perf_counter() - wall0
    from streaming.spool import sealed_segments

    deadline = time.monotonic() + 600
    while sealed_segments(root / "spool") and time.monotonic() < deadline:
        if not landing.is_alive():
            raise RuntimeError("the sidecar stopped while segments were waiting")
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    landing.join(timeout=120)
    cpu = cpu_seconds() - cpu0
    all_lags = np.concatenate(lags) if lags else np.zeros(0)
    counts = _count_landed(root, int(written.value))
    return {
        "chunks": int(written.value),
        "writer_wall_s": writer_wall,
        "writer_rate_chunks_per_s": written.value / max(writer_wall, 1e-9),
        "sidecar_cpu_s": cpu,
        "lags": all_lags,
        "batch_seconds": batch_seconds,
        **counts,
    }


def _warm_up() -> None:
    """Import Beam and the landing code before any clock starts (one-off costs)."""
    import streaming.sidecar.pipeline  # noqa: F401


def run(quick: bool) -> BenchResult:
    sizes = QUICK if quick else FULL
    _warm_up()
    result = BenchResult(benchmark="sidecar", params=dict(sizes, chunk_bytes=CHUNK_BYTES))
    with tempfile.TemporaryDirectory(prefix="sonolake-bench-sidecar-") as tmp, progress() as bar:
        task = bar.add_task("sidecar", total=3)
        tp_root = Path(tmp) / "throughput"
        tp = _throughput(tp_root, sizes["tp_streams"], sizes["tp_seconds"])
        bar.advance(task)
        plain = _plain_write(tp_root, tp["batches"])
        bar.advance(task)
        shutil.rmtree(tp_root, ignore_errors=True)
        lag = _lag(Path(tmp) / "lag", sizes["lag_streams"], sizes["lag_seconds"])
        bar.advance(task)

    chunks_per_s = tp["chunks"] / tp["wall_s"]
    plain_per_s = plain["chunks"] / plain["wall_s"]
    lag_p = percentiles(lag["lags"], 50, 99)
    result.metrics = {
        "chunks_per_s": chunks_per_s,
        "mb_per_s": chunks_per_s * CHUNK_BYTES / 1e6,
        "cpu_us_per_chunk": tp["cpu_s"] / tp["chunks"] * 1e6,
        **{
            f"cpu_us_per_chunk_{name}": seconds / tp["chunks"] * 1e6
            for name, seconds in tp["split_cpu_s"].items()
        },
        "predictions": tp["predictions"],
        "batches": tp["batches"],
        "events": tp["events"],
        "duplicates": tp["duplicates"] + lag["duplicates"],
        "lost": tp["lost"] + lag["lost"],
        "lag_s_p50": lag_p["p50"],
        "lag_s_p99": lag_p["p99"],
        "lag_chunks": lag["chunks"],
        "lag_writer_chunks_per_s": lag["writer_rate_chunks_per_s"],
        "lag_batch_s_p50": percentiles(lag["batch_seconds"], 50)["p50"],
        "lag_sidecar_cpu_s": lag["sidecar_cpu_s"],
    }
    result.baseline = {
        "plain_write_chunks_per_s": plain_per_s,
        "plain_write_cpu_us_per_chunk": plain["cpu_s"] / plain["chunks"] * 1e6,
    }
    result.ratios = {
        "throughput_vs_plain_write": chunks_per_s / plain_per_s,
        "lag_p99_vs_goal": lag_p["p99"] / LAG_GOAL_P99_S,
    }
    result.ok = result.metrics["duplicates"] == 0 and result.metrics["lost"] == 0
    if not result.ok:
        result.error = "chunks were duplicated or lost"
    return result
