"""With a model loaded: labelled interim and final results, and a hot swap mid-session.

The model is a small untrained linear classifier in the real bundle format, served by the real
serving engine: its labels are meaningless, but every step (features, micro-batching, result
fields, model version) is the production path.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from gateway_support import chunks, next_message, open_ws, read_until_closed, speech_stream

from benchmarks.gateway import LABELS, write_linear_bundle
from models.serving import ServingEngine
from streaming.gateway.protocol import CLOSE_NORMAL

pytestmark = pytest.mark.integration


def test_results_carry_labels_scores_and_the_model_version(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    engine = _linear_engine(tmp_path / "m1", "7")
    gateway = make_gateway(engine=engine, interim_interval_ms=100)
    audio = speech_stream(shared_data, words=2, gap_s=1.0)
    frames = chunks(audio)
    half = len(frames) // 2
    try:
        with open_ws(gateway.url("device_id=d&interim_results=true")) as ws:
            metadata = next_message(ws)
            assert metadata["model_loaded"] is True and metadata["model_version"] == "7"
            for frame in frames[:half]:  # about 3x real time, so interims have time to happen
                ws.send(frame)
                time.sleep(0.03)
            deadline = time.monotonic() + 10
            seen = [next_message(ws)]
            while not (seen[-1]["type"] == "Results" and seen[-1]["is_final"]):
                assert time.monotonic() < deadline
                seen.append(next_message(ws))
            first_final = seen[-1]
            # a new version is promoted while the session streams: no reconnect needed
            engine.load_bundle(write_linear_bundle(tmp_path / "m2", seed=2), model_version="8")
            for frame in frames[half:]:
                ws.send(frame)
            ws.send(json.dumps({"type": "CloseStream"}))
            transcript = read_until_closed(ws, timeout_s=20)
    finally:
        engine.close()
    assert transcript.close_code == CLOSE_NORMAL
    assert first_final["model_version"] == "7"
    results = [m for m in seen[:-1] if m["type"] == "Results"] + transcript.of("Results")
    finals = [r for r in results if r["is_final"]]
    assert finals and finals[-1]["model_version"] == "8"
    for result in [first_final, *results]:
        assert result["label"] in LABELS
        assert 0.0 < result["score"] <= 1.0
        assert len(result["alternatives"]) == 3
        assert result["alternatives"][0] == {"label": result["label"], "score": result["score"]}
    interims = [r for r in results if not r["is_final"]]
    assert interims, "interim results while a word is being spoken"
    totals = transcript.of("Metadata")[-1]["totals"]
    assert totals["model_version"] == "8"
    assert totals["interim_results"] >= len(interims)


def test_a_model_slower_than_the_traffic_skips_interims_never_finals(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine = _linear_engine(tmp_path / "slow", "slow", max_batch=1)
    run_requests = engine._run_requests

    def slow_model(batch: Any) -> Any:  # a model that needs 150 ms a window
        time.sleep(0.15)
        return run_requests(batch)

    engine._run_requests = slow_model  # type: ignore[method-assign]
    gateway = make_gateway(engine=engine, interim_interval_ms=100)
    words, streams = 2, 4
    frames = chunks(speech_stream(shared_data, words=words, gap_s=1.0))

    def stream(device: int) -> list[dict[str, Any]]:
        with open_ws(gateway.url(f"device_id=d{device}&interim_results=true")) as ws:
            next_message(ws)
            for frame in frames:
                ws.send(frame)
                time.sleep(0.1)  # real time
            ws.send(json.dumps({"type": "CloseStream"}))
            return list(read_until_closed(ws, timeout_s=60).of("Results"))

    try:
        with ThreadPoolExecutor(streams) as pool:
            results = [r for rs in pool.map(stream, range(streams)) for r in rs]
        skipped = gateway.call(_skipped_interims(gateway))
    finally:
        engine.close()
    finals = [r for r in results if r["is_final"]]
    assert len(finals) >= words * streams, "every utterance still gets its final"
    assert all(r["model_version"] == "slow" for r in finals)
    assert skipped > 0, "four streams' interims queue behind a model that serves ~6 a second"


async def _skipped_interims(gateway: Any) -> int:
    return int(gateway.gateway.metrics.results["interim_skipped"])


def _linear_engine(folder: Path, version: str, **options: Any) -> ServingEngine:
    """The real engine over an untrained linear bundle (its labels mean nothing)."""
    return ServingEngine.from_bundle(
        write_linear_bundle(folder, seed=1),
        providers=["CPUExecutionProvider"],
        model_version=version,
        max_wait_us=500,
        **options,
    )
