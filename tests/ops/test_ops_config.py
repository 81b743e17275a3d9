"""Alert rules and the dashboard: valid for Prometheus, and every series they use is real.

``promtool check rules`` (Debian's ``prometheus`` package, ``make ops-tools``) validates the
rules; then a real gateway and a real sidecar are started and every ``sonolake_*`` series
the rules and the dashboard name must appear on one of their ``/metrics`` pages.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import REPO_ROOT, ServerProcess, free_port, python_module

from streaming.sidecar.driver import BatchReport
from streaming.sidecar.metrics import SidecarMetrics

RULES = REPO_ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "ops" / "grafana" / "sonolake-dashboard.json"
SERIES = re.compile(r"\b(sonolake_[a-z0-9_]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exposed(text: str) -> set[str]:
    """Every series name a /metrics page declares, with or without samples yet."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def _used() -> set[str]:
    exprs = SERIES.findall(RULES.read_text())
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            exprs += SERIES.findall(target["expr"])
    return set(exprs)


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: `make ops-tools` (Debian's prometheus package)")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_sidecar_metrics_count_batches(tmp_path: Path) -> None:
    metrics = SidecarMetrics(tmp_path / "spool")
    report = BatchReport(3, 2, replayed=True, reused_staged=False, seconds=1.5)
    report.committed_rows = {"bronze.audio_chunks": 40, "silver.audio_events": 2}
    report.skipped_tables = ["silver.sessions"]
    report.quarantined = ["00000000000000000001.arrow"]
    metrics.observe(report)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples[("sonolake_sidecar_batches_total", ())] == 1
    assert samples[("sonolake_sidecar_batch_replays_total", ())] == 1
    assert samples[("sonolake_sidecar_quarantined_segments_total", ())] == 1
    assert samples[("sonolake_sidecar_rows_total", (("table", "bronze.audio_chunks"),))] == 40
    assert samples[("sonolake_sidecar_skipped_commits_total", (("table", "silver.sessions"),))] == 1
    assert samples[("sonolake_sidecar_spool_backlog_segments", ())] == 0


@pytest.mark.integration
def test_every_series_in_rules_and_dashboard_exists_on_a_live_metrics_page(
    tmp_path: Path,
) -> None:
    env = {
        "SONOLAKE_STATE_DIR": str(tmp_path / "state"),
        "SONOLAKE_LAKE_URI": str(tmp_path / "lakehouse"),
        "SONOLAKE_GATEWAY_SERVE_MODEL": "false",
        "SONOLAKE_AUTH_TOKENS": "",
    }
    gateway_port, sidecar_port = free_port(), free_port()
    gateway = ServerProcess(
        python_module("sonolake", "gateway", "--port", str(gateway_port)),
        gateway_port,
        env=env,
        log_path=tmp_path / "gateway.log",
    )
    sidecar = ServerProcess(
        python_module("sonolake", "sidecar"),
        sidecar_port,
        env={**env, "SONOLAKE_SIDECAR_METRICS_PORT": str(sidecar_port)},
        log_path=tmp_path / "sidecar.log",
    )
    exposed: set[str] = set()
    with gateway, sidecar:
        for port in (gateway_port, sidecar_port):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
                exposed |= _exposed(page.read().decode())
    used = _used()
    assert len(used) >= 15
    assert sorted(used - exposed) == []
