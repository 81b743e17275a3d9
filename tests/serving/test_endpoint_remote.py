"""The gateway classifying on a remote endpoint (``SONOLAKE_INFERENCE_URL``), and the endpoint
being killed mid-stream: sessions go on, their results lose the label, the misses are counted;
and when it comes back on the same port the gateway scores with it again.

A real gateway (in a thread, real spool) with a :class:`RemoteEngine`, a real ``sonolake serve``
child process killed with SIGKILL, real speech streamed over a real WebSocket.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from endpoint_support import Endpoint, running_endpoint
from support import REPO_ROOT

from models.remote_engine import RemoteCollector, RemoteEngine, grpc_target
from sonolake import wiring
from sonolake.settings import Settings

sys.path.insert(0, str(REPO_ROOT / "tests" / "streaming"))  # the gateway tests' helpers
from gateway_support import (
    TEST_CONFIG,
    GatewayThread,
    chunks,
    next_message,
    open_ws,
    read_until_closed,
    speech_stream,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def endpoint(tmp_path: Path, weak_bundle: Path, good_bundle: Path) -> Iterator[Endpoint]:
    with running_endpoint(tmp_path / "endpoint", weak_bundle, good_bundle) as e:
        yield e


def stream_until_final(ws: Any, frames: list[bytes], timeout_s: float = 20) -> list[dict]:
    """Send ``frames`` at about 3× real time and Finalize; read until a final result arrives."""
    for frame in frames:
        ws.send(frame)
        time.sleep(0.03)
    ws.send(json.dumps({"type": "Finalize"}))  # the utterance ends here, whatever the VAD says
    seen = [next_message(ws, timeout_s)]
    deadline = time.monotonic() + timeout_s
    while not (seen[-1]["type"] == "Results" and seen[-1]["is_final"]):
        assert time.monotonic() < deadline, "no final result"
        seen.append(next_message(ws, timeout_s))
    return seen


def test_gateway_scores_remotely_survives_the_endpoint_dying_and_uses_it_again(
    endpoint: Endpoint, shared_data: Path, tmp_path: Path
) -> None:
    engine = RemoteEngine(endpoint.grpc_url, timeout_s=0.5, retry_s=0.5, max_wait_us=1000)
    assert engine.model_version == "1"  # probed at construction: the champion
    config = TEST_CONFIG.__class__(**{**TEST_CONFIG.__dict__, "idle_timeout_s": 10.0})
    gateway = GatewayThread(config, tmp_path / "spool", engine=engine).start()
    frames = chunks(speech_stream(shared_data, words=3, gap_s=1.0))
    half = len(frames) // 2
    try:
        with open_ws(gateway.url("device_id=d&interim_results=true")) as ws:
            metadata = next_message(ws)
            assert metadata["model_loaded"] is True
            before = [m for m in stream_until_final(ws, frames[:half]) if m["type"] == "Results"]
            os.kill(endpoint.process.pid, signal.SIGKILL)  # the endpoint dies mid-stream
            endpoint.process.proc.wait(10)  # type: ignore[union-attr]
            for frame in frames[half:]:
                ws.send(frame)
                time.sleep(0.01)
            ws.send(json.dumps({"type": "CloseStream"}))
            transcript = read_until_closed(ws, timeout_s=30)
        with open_ws(gateway.url("device_id=e")) as second:  # new sessions still open
            assert next_message(second)["type"] == "Metadata"
            second.send(json.dumps({"type": "CloseStream"}))
            read_until_closed(second, timeout_s=10)
        misses_while_down = engine.metrics.misses
        endpoint.restart()  # back on the same port: the gateway uses it again, unchanged
        with open_ws(gateway.url("device_id=f&interim_results=true")) as third:
            next_message(third)
            deadline = time.monotonic() + 30
            while True:
                again = [
                    m for m in stream_until_final(third, frames[:half]) if m["type"] == "Results"
                ]
                if again[-1]["label"] is not None or time.monotonic() > deadline:
                    break
            third.send(json.dumps({"type": "CloseStream"}))
            read_until_closed(third, timeout_s=20)
        registry = gateway.gateway.metrics.registry  # type: ignore[union-attr]
        registry.register(RemoteCollector(engine))
        exported = gateway.gateway.metrics.render().decode()  # type: ignore[union-attr]
    finally:
        gateway.stop()
        engine.close()
    assert before and all(r["model_version"] == "1" and r["label"] for r in before)
    after = transcript.of("Results")
    assert transcript.close_code == 1000, "the session ended normally"
    assert after and all(r["label"] is None for r in after if r["is_final"])
    assert transcript.of("Metadata")[-1]["totals"]["final_results"] >= 2
    assert again[-1]["label"] and again[-1]["model_version"] == "1", "scored again after restart"
    snapshot = engine.metrics.snapshot()
    assert snapshot["scored"] >= len(before)
    assert snapshot["misses"] >= sum(1 for r in after if r["label"] is None)
    assert misses_while_down > 0 and engine.up
    assert f"sonolake_remote_inference_misses_total {float(snapshot['misses'])}" in exported
    assert "sonolake_remote_inference_up 1.0" in exported


def test_the_gateway_picks_the_remote_engine_from_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SONOLAKE_INFERENCE_URL", "grpc://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("SONOLAKE_STATE_DIR", str(tmp_path))
    engine = wiring.gateway_classifier(Settings(_env_file=None))
    assert isinstance(engine, RemoteEngine) and engine.target == "127.0.0.1:9"
    assert engine.loaded and engine.model_version is None  # served remotely, not reachable yet
    with pytest.raises(ValueError, match="host:port"):
        grpc_target("http://example.com")


def test_serve_without_a_registry_is_bad_usage(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from sonolake.cli import main

    assert main(["serve", "--http-port", "0", "--grpc-port", "0"]) == 2
    assert "no model registry" in capsys.readouterr().err
