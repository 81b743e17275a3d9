"""``python -m benchmarks inference``: FP32 vs INT8 ONNX on the CPU (and FP16 on CUDA).

Per artifact, on the real held-out speakers: ``latency_us_p50/p99`` of one window at batch 1,
``windows_per_s`` and ``cpu_us_per_window`` at batch 64 (one intra-op thread, so figures are
per core), and ``accuracy``. The baseline is the FP32 model in the same run. Ratios:
``int8_speedup`` (FP32 / INT8 batch-1 p50 latency), ``int8_speedup_b64`` (FP32 / INT8 CPU time
per window at batch 64: CPU time does not move when a neighbour is busy) and
``int8_accuracy_drop`` (FP32 − INT8 accuracy). Dynamic INT8 quantization of the same model is
measured alongside (``int8_dynamic_*``) to show why the bundle's INT8 is static QDQ.
Goals: speedup ≥ 2.5, drop ≤ 0.01, INT8 batch-1 p99 ≤ 1 ms.

The model is the full bundle that ``sonolake train`` leaves under the state folder; without
one, a quick model is trained there first by the same pipeline (and reused next time).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import BenchResult, cpu_seconds, percentiles, progress

INT8_SPEEDUP_GOAL = 2.5
INT8_DROP_GOAL = 0.01
P99_GOAL_US = 1000.0
BATCH = 64


def _bundle(quick: bool) -> Path:
    from features.corpus import SPEECH_COMMANDS, corpus_manifest
    from models.candidate import train_candidate
    from models.dataset import corpus_split
    from models.evaluation import LIGHT_PROBE
    from models.training import preset
    from sonolake import wiring
    from sonolake.settings import get_settings

    settings = get_settings()
    for name in ("full", "quick"):
        candidate = wiring.bundle_dir(settings, name)
        if (candidate / "model.json").exists():
            return candidate
    target = wiring.bundle_dir(settings, "quick")
    split = corpus_split(corpus_manifest(settings.data_dir, SPEECH_COMMANDS))
    train_candidate(
        split.train,
        split.heldout,
        preset_name="quick",
        config=preset("quick", epochs=4 if quick else None),
        bundle_dir=target,
        registry=wiring.registry(settings),
        speed=LIGHT_PROBE,
        run_name="benchmark-quick",
    )
    return target


def _heldout() -> tuple[np.ndarray, np.ndarray]:
    from features import logmel_batch
    from features.corpus import SPEECH_COMMANDS, corpus_manifest, read_manifest, split_by_speaker
    from models.dataset import LabelledWindows
    from sonolake.settings import get_settings

    clips = read_manifest(corpus_manifest(get_settings().data_dir, SPEECH_COMMANDS))
    heldout = LabelledWindows.from_clips(split_by_speaker(clips)[1])
    return logmel_batch(heldout.windows), heldout.labels


def _measure(
    session: Any, logmel: np.ndarray, labels: np.ndarray, runs: int, seconds: float
) -> dict[str, float]:
    from models.evaluation import predict_probs

    name = session.get_inputs()[0].name
    accuracy = float(np.mean(predict_probs(session, logmel).argmax(axis=1) == labels))
    one = logmel[:1]
    for _ in range(30):
        session.run(None, {name: one})
    times_us = np.empty(runs)
    for i in range(runs):
        started = time.perf_counter_ns()
        session.run(None, {name: one})
        times_us[i] = (time.perf_counter_ns() - started) / 1e3
    batch = logmel[np.resize(np.arange(len(logmel)), BATCH)]
    session.run(None, {name: batch})
    count, cpu0, wall0 = 0, cpu_seconds(), time.perf_counter()
    while count < 5 or time.perf_counter() - wall0 < seconds:
        session.run(None, {name: batch})
        count += 1
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    latency = percentiles(times_us, 50, 99)
    return {
        "accuracy": accuracy,
        "latency_us_p50": latency["p50"],
        "latency_us_p99": latency["p99"],
        "windows_per_s": count * BATCH / wall,
        "cpu_us_per_window": cpu * 1e6 / (count * BATCH),
    }


def run(quick: bool) -> BenchResult:
    from models.bundle import artifact_path, read_bundle_manifest
    from models.onnx_session import file_session

    runs, seconds = (300, 0.5) if quick else (3000, 3.0)
    bundle = _bundle(quick)
    logmel, labels = _heldout()
    manifest = read_bundle_manifest(bundle)
    result = BenchResult(
        benchmark="inference",
        params={
            "bundle": str(bundle),
            "architecture": manifest.get("architecture", {}),
            "heldout_windows": len(labels),
            "latency_runs": runs,
            "throughput_batch": BATCH,
            "intra_op_threads": 1,
        },
    )
    cpu_runs: dict[str, dict[str, Any]] = {}
    cuda_available = _cuda_available()
    plan = [
        ("fp32", "CPUExecutionProvider"),
        ("int8", "CPUExecutionProvider"),
        ("int8_dynamic", "CPUExecutionProvider"),
    ]
    if cuda_available:
        plan += [("fp16", "CUDAExecutionProvider"), ("fp32", "CUDAExecutionProvider")]
    with progress() as bar, tempfile.TemporaryDirectory(prefix="sonolake-bench-") as scratch:
        task = bar.add_task("inference", total=len(plan))
        for artifact, provider in plan:
            path = (
                _dynamic_int8(bundle, scratch)
                if artifact == "int8_dynamic"
                else artifact_path(bundle, artifact)
            )
            session = file_session(path, [provider])
            used = session.get_providers()[0]
            figures = _measure(session, logmel, labels, runs, seconds)
            key = artifact if provider == "CPUExecutionProvider" else f"{artifact}_cuda"
            if used != provider:
                figures["provider_fell_back_to"] = used
            cpu_runs[key] = figures
            bar.advance(task)
    fp32, int8 = cpu_runs.pop("fp32"), cpu_runs["int8"]
    result.baseline = {f"fp32_{k}": v for k, v in fp32.items()}
    result.metrics = {f"{a}_{k}": v for a, figures in cpu_runs.items() for k, v in figures.items()}
    speedup = fp32["latency_us_p50"] / int8["latency_us_p50"]
    drop = fp32["accuracy"] - int8["accuracy"]
    result.ratios = {
        "int8_speedup": speedup,
        "int8_speedup_b64": fp32["cpu_us_per_window"] / int8["cpu_us_per_window"],
        "int8_accuracy_drop": drop,
    }
    result.metrics["goals_met"] = {
        f"int8_speedup >= {INT8_SPEEDUP_GOAL}": speedup >= INT8_SPEEDUP_GOAL,
        f"int8_accuracy_drop <= {INT8_DROP_GOAL}": drop <= INT8_DROP_GOAL,
        f"int8 p99 <= {P99_GOAL_US:g} us": int8["latency_us_p99"] <= P99_GOAL_US,
    }
    return result


def _dynamic_int8(bundle: Path, scratch: str) -> Path:
    """The road not taken, measured alongside: dynamic INT8 (weights int8, ranges per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(scratch) / "model.int8_dynamic.onnx"
    quantize_dynamic(str(bundle / "model.onnx"), str(target), weight_type=QuantType.QUInt8)
    return target


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and _has_gpu()


def _has_gpu() -> bool:
    from benchmarks.harness import machine_info

    return machine_info().get("gpu") is not None
