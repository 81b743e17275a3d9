"""The browser page's Opus mode (MediaRecorder) and its reconnect-and-resume, in real Chromium.

As in test_browser_page.py, Chromium's fake capture device plays real spoken words as the
microphone. The resume test serves the page and its WebSocket through a TCP relay and cuts
the relay's links mid-stream: the page must reconnect, resend what was not acknowledged, and
the spool must hold every frame it sent exactly once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import RelayThread, speech_stream
from test_browser_page import CHROMIUM, CHROMIUM_ARGS

from features.corpus import write_wav
from streaming.spool import KIND_CHUNK

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium not installed"),
]


def _run_page(tmp_path: Path, shared_data: Path, port: int, query: str, during: Any) -> dict:
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "microphone.wav"
    write_wav(wav, speech_stream(shared_data, words=3, gap_s=0.6), 16_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            headless=True,
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
        )
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/?token=test-token&{query}")
            page.click("#start")
            during(page)
            page.click("#stop")
            page.wait_for_function("window.sonolake.closed !== null", timeout=20_000)
            return dict(page.evaluate("window.sonolake"))
        finally:
            browser.close()


def _stored(gateway: Any) -> list[dict]:
    rows = [
        r
        for r in gateway.stored().to_pylist()
        if r["kind"] == KIND_CHUNK and r["device_id"].startswith("browser-")
    ]
    return sorted(rows, key=lambda r: r["seq"])


def test_opus_mode_streams_webm_opus_that_the_gateway_decodes(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    gateway = make_gateway(idle_timeout_s=10.0)

    def during(page: Any) -> None:
        page.wait_for_function("window.sonolake.results.length >= 2", timeout=30_000)

    state = _run_page(tmp_path, shared_data, gateway.port, "mode=opus", during)
    assert state["mode"] == "opus" and state["closed"]["code"] == 1000
    assert len(state["results"]) >= 2
    # Every piece the recorder gave is acked; the decoder's last samples, flushed at CloseStream,
    # are stored under one more seq (docs/protocol.md, compressed audio).
    assert state["lastAck"] in (state["framesSent"] - 1, state["framesSent"])
    stored = _stored(gateway)
    assert stored and {(r["encoding"], r["sample_rate"]) for r in stored} == {("linear16", 16000)}
    pcm = np.frombuffer(b"".join(r["pcm"] for r in stored), dtype="<i2")
    assert np.abs(pcm).max() > 1000, "decoded speech, not silence"


def test_page_reconnects_and_resumes_after_a_drop(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    gateway = make_gateway(idle_timeout_s=10.0)
    relay = RelayThread(gateway.port)
    port = relay.start()

    def during(page: Any) -> None:
        for frames in (15, 35):
            page.wait_for_function(f"window.sonolake.framesSent >= {frames}", timeout=30_000)
            relay.cut()
        page.wait_for_function("window.sonolake.resumes >= 2", timeout=30_000)
        page.wait_for_function("window.sonolake.framesSent >= 50", timeout=30_000)

    try:
        state = _run_page(tmp_path, shared_data, port, "mode=pcm", during)
    finally:
        relay.stop()
    assert state["closed"]["code"] == 1000 and len(state["sessions"]) == 1
    assert state["lastAck"] == state["framesSent"] - 1
    stored = _stored(gateway)
    assert [r["seq"] for r in stored] == list(range(state["framesSent"])), "each frame once"
