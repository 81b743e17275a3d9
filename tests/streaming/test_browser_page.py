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


def _window_correlations(received: np.ndarray, reference: np.ndarray) -> list[float]:
    """For each voiced half-second window of ``received``: its best normalised correlation with any
    stretch of the (looping) file as long. Judged per window, so a render quantum the browser's
    capture skips on a busy machine costs one window, not the whole comparison."""
    from scipy.signal import correlate

    window = 8_000  # samples: half a second
    looped = np.concatenate([reference, reference[:window]])
    energy = np.concatenate([[0.0], np.cumsum(looped**2)])
    stretch_norms = np.sqrt(np.maximum(energy[window:] - energy[:-window], 1e-9))
    found = []
    for start in range(0, received.size - window + 1, window):
        segment = received[start : start + window]
        if np.sqrt(np.mean(segment**2)) < 50:  # a pause between words: nothing to match
            continue
        dots = correlate(looped, segment, mode="valid", method="fft")
        found.append(float((dots / (stretch_norms * np.linalg.norm(segment))).max()))
    return found


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
            # keep streaming until two loops of the file have been captured
            loop_frames = 2 * (audio.size // 1600) + 10
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
    correlations = _window_correlations(received, audio.astype(np.float64))
    median = float(np.median(correlations))
    print(f"stored audio vs the file: median of {len(correlations)} windows {median:.3f}")
    assert len(correlations) >= 3 and median > 0.9, correlations
