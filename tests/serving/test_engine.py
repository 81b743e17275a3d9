"""The serving engine: provider choice, micro-batching, empty engine, metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from serving_bundles import tone_windows

from models.onnx_session import provider_plan
from models.serving import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    IncompatibleModel,
    NoModelLoaded,
    ServingEngine,
    choose_artifact,
)
from models.serving_metrics import EngineCollector

ALL_ARTIFACTS = ("fp32", "int8", "fp16")


@pytest.mark.parametrize(
    ("provider", "present", "forced", "expected"),
    [
        (CUDA_PROVIDER, ALL_ARTIFACTS, None, "fp16"),
        (CPU_PROVIDER, ALL_ARTIFACTS, None, "int8"),
        (CUDA_PROVIDER, ("fp32", "int8"), None, "fp32"),  # never INT8 on CUDA
        (CPU_PROVIDER, ("fp32", "fp16"), None, "fp32"),
        (CPU_PROVIDER, ALL_ARTIFACTS, "fp16", "fp16"),
        ("SomeOtherProvider", ALL_ARTIFACTS, None, "fp32"),
    ],
)
def test_choose_artifact(provider, present, forced, expected) -> None:
    assert choose_artifact(provider, present, forced) == expected


def test_choose_artifact_refuses_a_missing_forced_artifact() -> None:
    with pytest.raises(IncompatibleModel, match="no int8 artifact"):
        choose_artifact(CPU_PROVIDER, ("fp32",), "int8")


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        (None, [CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER]),
        (None, [CPU_PROVIDER], [CPU_PROVIDER]),
        ([CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER], [CPU_PROVIDER]),
        ([CUDA_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER]),
    ],
)
def test_provider_plan(requested, available, expected) -> None:
    assert provider_plan(requested, available) == expected


def test_engine_reports_the_provider_the_session_really_uses(good_bundle: Path) -> None:
    """Default providers ask for CUDA first; whatever ran, the artifact follows it."""
    engine = ServingEngine.from_bundle(good_bundle)
    actual = engine.model.session.get_providers()[0]
    assert engine.provider == actual
    assert engine.artifact == ("fp16" if actual == CUDA_PROVIDER else "int8")
    cpu = ServingEngine.from_bundle(good_bundle, providers=[CPU_PROVIDER])
    assert (cpu.provider, cpu.artifact) == (CPU_PROVIDER, "int8")


def test_classify_batch_classifies_and_carries_the_version(good_bundle: Path) -> None:
    engine = ServingEngine.from_bundle(good_bundle, providers=[CPU_PROVIDER], model_version="7")
    windows, labels = tone_windows(3, seed=23)
    predictions = engine.classify_batch(windows)
    assert [p.label for p in predictions] == list(labels)
    for p in predictions:
        assert p.model_version == "7"
        assert p.top_k[0] == (p.label, p.score)
        assert len(p.top_k) == 3 and p.top_k[0][1] >= p.top_k[1][1] >= p.top_k[2][1]
        assert 0.0 < p.score <= 1.0
    with pytest.raises(ValueError, match="16000"):
        engine.classify_batch(windows[:, :8000])


def test_concurrent_callers_are_batched_and_agree_with_classify_batch(good_bundle: Path) -> None:
    # FP32: a dynamically quantized INT8 model scales activations per batch, so its scores
    # move (~1e-3) with the company a window keeps; FP32 scores must not.
    engine = ServingEngine.from_bundle(
        good_bundle, providers=[CPU_PROVIDER], artifact="fp32", max_batch=32, max_wait_us=5000
    )
    windows, _ = tone_windows(10, seed=31)  # 120 windows

    async def main() -> list:
        return await asyncio.gather(*(engine.classify(w) for w in windows))

    try:
        batched = asyncio.run(main())
    finally:
        engine.close()
    direct = engine.classify_batch(windows)
    assert [p.label for p in batched] == [p.label for p in direct]
    np.testing.assert_allclose(
        [p.score for p in batched], [p.score for p in direct], rtol=1e-5, atol=1e-6
    )
    stats = engine.metrics.snapshot()
    assert stats["requests"] == len(windows)
    assert stats["batches"] < len(windows) / 4  # 120 callers at once: a handful of batches
    assert stats["max_batch_size_bucket"] == 32  # and they fill up to max_batch
    assert stats["failed_requests"] == 0


@pytest.mark.parametrize("artifact", ALL_ARTIFACTS)
def test_the_exporters_bundle_serves_the_same_batched_or_not(dscnn_bundle: Path, artifact) -> None:
    """The real exporter's graph (static-QDQ INT8 included) gives each window the same scores
    whatever batch it rides in."""
    engine = ServingEngine.from_bundle(
        dscnn_bundle, providers=[CPU_PROVIDER], artifact=artifact, max_batch=8, max_wait_us=2000
    )
    windows, _ = tone_windows(2, seed=41)

    async def main() -> list:
        return await asyncio.gather(*(engine.classify(w) for w in windows))

    try:
        batched = asyncio.run(main())
    finally:
        engine.close()
    direct = engine.classify_batch(windows)
    assert engine.artifact == artifact and len(engine.labels) == 12
    assert [p.label for p in batched] == [p.label for p in direct]
    np.testing.assert_allclose(
        [p.score for p in batched], [p.score for p in direct], rtol=1e-4, atol=1e-5
    )
    assert engine.metrics.snapshot()["batches"] < len(windows)


def test_a_lone_caller_waits_at_most_max_wait(good_bundle: Path) -> None:
    engine = ServingEngine.from_bundle(
        good_bundle, providers=[CPU_PROVIDER], max_batch=64, max_wait_us=1000
    )
    window = tone_windows(1, seed=2)[0][0]

    async def main() -> None:
        for _ in range(3):
            prediction = await asyncio.wait_for(engine.classify(window), timeout=5)
            assert prediction.label == "yes"

    try:
        asyncio.run(main())
    finally:
        engine.close()
    assert engine.metrics.snapshot()["batches"] == 3


def test_wrong_window_shape_is_refused_before_queueing(good_bundle: Path) -> None:
    engine = ServingEngine.from_bundle(good_bundle, providers=[CPU_PROVIDER])

    async def main() -> None:
        with pytest.raises(ValueError, match="fit_window"):
            await engine.classify(np.zeros(15999, np.float32))

    asyncio.run(main())
    engine.close()


def test_empty_engine_says_no_model_is_loaded(registry) -> None:
    engine = ServingEngine.from_registry(registry)
    assert not engine.loaded
    assert engine.model_version is None and engine.provider is None
    with pytest.raises(NoModelLoaded):
        engine.classify_batch(np.zeros((1, 16000), np.float32))

    async def main() -> None:
        with pytest.raises(NoModelLoaded, match="no champion"):
            await engine.classify(np.zeros(16000, np.float32))

    asyncio.run(main())
    engine.close()


def test_a_bundle_for_other_features_is_refused(good_bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-features"
    shutil.copytree(good_bundle, other)
    manifest = json.loads((other / "model.json").read_text())
    manifest["feature_version"] = "mfcc13-v0"
    (other / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleModel, match="mfcc13-v0"):
        ServingEngine.from_bundle(other)


def test_metrics_export_to_prometheus(good_bundle: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    engine = ServingEngine.from_bundle(good_bundle, providers=[CPU_PROVIDER], model_version="3")
    windows, _ = tone_windows(2, seed=4)

    async def main() -> None:
        await asyncio.gather(*(engine.classify(w) for w in windows))

    asyncio.run(main())
    engine.close()
    prometheus = CollectorRegistry()
    prometheus.register(EngineCollector({"champion": engine}))
    text = generate_latest(prometheus).decode()
    assert f'sonolake_inference_requests_total{{role="champion"}} {float(len(windows))}' in text
    batches = engine.metrics.snapshot()["batches"]
    assert f'sonolake_inference_batch_size_bucket{{le="+Inf",role="champion"}} {batches}' in text
    assert f'sonolake_inference_batch_size_count{{role="champion"}} {float(batches)}' in text
    assert "sonolake_inference_request_latency_seconds_count" in text
    assert (
        'sonolake_inference_model_info{artifact="int8",model_version="3",'
        'provider="CPUExecutionProvider",role="champion"} 1.0' in text
    )
