"""The Dagster UI shows the asset graph, its checks, schedules and sensors (headless Chromium).

A real ``dagster-webserver`` serves ``workspace.yaml`` on a free loopback port (stopped by PID);
Playwright drives Debian's Chromium through the pages a data scientist opens first. The
screenshots land in the test's tmp folder for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT, ServerProcess, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PAGE_TIMEOUT_MS = 120_000
LOCATION = "sonolake"
"""``location_name`` in workspace.yaml."""


def _dismiss_welcome(page: object) -> None:
    """Close the first-visit community dialog if it shows (it covers the graph)."""
    skip = page.get_by_role("button", name="Skip")  # type: ignore[attr-defined]
    try:
        skip.first.click(timeout=15_000)
    except Exception:  # the dialog did not appear: nothing to close
        return


@pytest.mark.browser
@pytest.mark.integration
@pytest.mark.slow
def test_ui_shows_the_asset_graph_checks_schedules_and_sensors(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (`make browser` installs it)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    home = tmp_path / "dagster"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")} | {
        "DAGSTER_HOME": str(home),
        "SONOLAKE_STATE_DIR": str(tmp_path / "state"),
        "SONOLAKE_LAKE_URI": str(tmp_path / "lakehouse"),
    }
    webserver = Path(sys.executable).parent / "dagster-webserver"
    server = ServerProcess(
        [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        port,
        env=env,
        cwd=REPO_ROOT,
        log_path=tmp_path / "webserver.log",
        ready_timeout_s=180,
    )
    base = f"http://127.0.0.1:{port}"
    with server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Large enough that the graph's fit-to-screen zoom still draws node labels.
            page = browser.new_page(viewport={"width": 2400, "height": 1500})
            page.set_default_timeout(PAGE_TIMEOUT_MS)

            page.goto(f"{base}/locations/{LOCATION}/asset-groups/training/lineage")
            _dismiss_welcome(page)
            for name in ("training_set", "candidate_model", "model_evaluation", "champion_model"):
                page.get_by_text(name, exact=True).first.wait_for()
            page.get_by_text("0 / 1 Passed").first.wait_for()  # the gate, a check on the graph
            page.screenshot(path=str(tmp_path / "asset-graph.png"), full_page=True)

            page.goto(f"{base}/locations/{LOCATION}/asset-groups/ingestion/lineage")
            for name in ("audio_chunks", "audio_events", "sessions", "dead_letters"):
                page.get_by_text(name, exact=True).first.wait_for()
            page.screenshot(path=str(tmp_path / "ingestion-graph.png"), full_page=True)

            page.goto(f"{base}/assets/training/model_evaluation?view=checks")
            page.get_by_text("promotion_gate").first.wait_for()
            page.screenshot(path=str(tmp_path / "promotion-gate.png"))

            page.goto(f"{base}/automation")
            for name in ("nightly_retrain", "drift_retraining_sensor"):
                page.get_by_text(name).first.wait_for()
            page.screenshot(path=str(tmp_path / "automation.png"), full_page=True)
        finally:
            browser.close()
    for shot in ("asset-graph.png", "ingestion-graph.png", "promotion-gate.png", "automation.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
    keep = os.environ.get("SONOLAKE_UI_SCREENSHOTS")
    if keep:  # `SONOLAKE_UI_SCREENSHOTS=dir pytest ...` keeps the pictures for the docs
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in tmp_path.glob("*.png"):
            shutil.copy(shot, Path(keep) / shot.name)
