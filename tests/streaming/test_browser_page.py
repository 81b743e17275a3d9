"""The browser page in real headless Chromium: microphone → AudioWorklet → gateway → results.

Chromium's fake capture device plays a WAV of real spoken words (looping) as the microphone.
The test checks the page shows the results, and that what the gateway stored is that audio
(correlation of the stored PCM with the file, over the loop's unknown starting point).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import speech_stream

from features.corpus import write_wav
from streaming.spool import KIND_CHUNK

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _best_circular_correlation(received: np.ndarray, reference: np.ndarray) -> float:
    """Max normalised correlation of one loop-length stretch of ``received`` with the file."""
    n = reference.size
    segment = received[-n:]
    assert segment.size == n, "the page streamed less than one loop of the file"
    spectrum = np.fft.rfft(segment) * np.conj(np.fft.rfft(reference))
    correlation = np.fft.irfft(spectrum, n)
    return float(correlation.max() / (np.linalg.norm(segment) * np.linalg.norm(reference)))


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium not installed (make browser)")
def test_page_streams_the_microphone_and_shows_results(
    make_gateway: Any, shared_data: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    audio = speech_stream(shared_data, words=3, gap_s=0.6)
    wav = tmp_path / "microphone.wav"
    write_wav(wav, audio, 16_000)
    gateway = make_gateway(idle_timeout_s=10.0)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            headless=True,
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
        )
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{gateway.port}/?token=test-token")
            page.click("#start")
            page.wait_for_function("window.sonolake.results.length >= 2", timeout=30_000)
            # keep streaming until more than one loop of the file has been captured
            loop_frames = audio.size // 1600 + 10
            page.wait_for_function(f"window.sonolake.framesSent >= {loop_frames}", timeout=30_000)
            finals = page.locator("#results li[data-kind=final]")
            assert finals.count() >= 2
            assert "speech (no model loaded)" in finals.first.inner_text()
            assert page.inner_text("#model") == "none loaded"
            page.click("#stop")
            page.wait_for_function("window.sonolake.closed !== null", timeout=15_000)
            state = page.evaluate("window.sonolake")
        finally:
            browser.close()
    assert state["closed"]["code"] == 1000
    assert state["lastAck"] == state["framesSent"] - 1, "every frame the page sent is durable"

    stored = [
        r
        for r in gateway.stored().to_pylist()
        if r["kind"] == KIND_CHUNK and r["device_id"].startswith("browser-")
    ]
    assert len(stored) == state["framesSent"]
    assert {(r["encoding"], r["sample_rate"]) for r in stored} == {("linear16", 16000)}
    received = np.frombuffer(b"".join(r["pcm"] for r in stored), dtype="<i2").astype(np.float64)
    correlation = _best_circular_correlation(received, audio.astype(np.float64))
    print(f"correlation of stored audio with the file: {correlation:.3f}")
    assert correlation > 0.9, correlation
