"""The sidecar on a real Dask cluster: a scheduler and workers started here, stopped by PID.

The same spool lands through the in-process runner and through the Dask runner; both lakes
must hold the same rows under the same batch numbers (app transactions), and the workers must
have executed the work. The fault cases kill a worker in the middle of a batch and restart the
scheduler between batches: every chunk still lands exactly once, with no operator step.
The cluster tests are marked ``dask`` (``make test-dask``): workers import Beam and load the
VAD once, minutes on 2 shared cores; the unreachable-scheduler case runs in ``make test``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from dask_cluster import DaskCluster, executed_count
from sidecar_signals import assert_landed_exactly_once, interleave, sessions, write_spool
from support import REPO_ROOT, free_port

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, SESSIONS, Lake
from sonolake.settings import BadSettings, get_settings
from streaming.sidecar.driver import BatchReport, Sidecar, SidecarConfig
from streaming.sidecar.options import ClusterUnavailable
from streaming.spool import sealed_segments

pytestmark = pytest.mark.integration

APP_TABLES = (AUDIO_CHUNKS, AUDIO_EVENTS, SESSIONS)
GROUP = sessions(4, chunks=30, bursts=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, bytecode_cache: Path) -> DaskCluster:
    """One cluster for the module (workers pay their imports once); the fault tests below
    leave it with a worker killed or a restarted scheduler, so they run last."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2, pycache=bytecode_cache)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def spool_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four sessions over 10 sealed segments: sessions straddle 3-segment batches (carries)."""
    spool = tmp_path_factory.mktemp("spool-template") / "spool"
    write_spool(spool, interleave(s.records() for s in GROUP), per_segment=12)
    return spool


def _sidecar(root: Path, template: Path, scheduler: str | None, **kw) -> Sidecar:
    if not (root / "spool").exists():
        shutil.copytree(template, root / "spool")
    config = SidecarConfig(
        spool_dir=root / "spool",
        state_dir=root / "state",
        retention_s=0.0,
        max_segments_per_batch=kw.pop("max_segments_per_batch", 4),
        dask_scheduler=scheduler,
        dask_partitions=2,
        dask_connect_timeout_s=kw.pop("dask_connect_timeout_s", 10),
    )
    return Sidecar(Lake(root / "lake"), config, **kw)


def _reports(sidecar: Sidecar) -> list[BatchReport]:
    reports = []
    while (report := sidecar.land_once()) is not None:
        reports.append(report)
    return reports


def _land_all(sidecar: Sidecar) -> list[int]:
    return [report.batch for report in _reports(sidecar)]


def _sorted(table: pa.Table, keys: list[str], drop: tuple[str, ...] = ()) -> pa.Table:
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return table.sort_by([(k, "ascending") for k in keys])


@pytest.mark.dask
def test_dask_runner_lands_what_the_in_process_runner_lands(
    cluster: DaskCluster, spool_template: Path, tmp_path: Path
) -> None:
    local = _sidecar(tmp_path / "local", spool_template, None)
    before = cluster.executed_counts()
    remote = _sidecar(tmp_path / "dask", spool_template, cluster.address)
    remote_reports, local_reports = _reports(remote), _reports(local)
    assert [r.batch for r in remote_reports] == [r.batch for r in local_reports] == [1, 2, 3]
    for ours, theirs in zip(remote_reports, local_reports, strict=True):
        assert ours.counters == theirs.counters and ours.counters["chunks"] > 0  # Beam counters
        assert ours.committed_rows == theirs.committed_rows
    after = cluster.executed_counts()
    assert all(after[w] > before.get(w, 0) for w in after), (before, after)  # both workers ran

    for spec in APP_TABLES:
        assert remote.lake.transaction_version(spec, "sidecar") == 3
        assert local.lake.transaction_version(spec, "sidecar") == 3
    assert_landed_exactly_once(remote.lake, GROUP)
    # Batch times differ between the two runs (they are planned at now()): ingest dates may too.
    for spec, keys, drop in (
        (AUDIO_CHUNKS, ["session_id", "seq"], ("ingest_date",)),
        (AUDIO_EVENTS, ["event_id"], ()),
        (SESSIONS, ["session_id"], ()),
    ):
        assert _sorted(remote.lake.read(spec), keys, drop).equals(
            _sorted(local.lake.read(spec), keys, drop)
        ), spec.name
    assert not sealed_segments(tmp_path / "dask" / "spool")
    assert not list((tmp_path / "dask" / "state").rglob("attempt-*"))


def test_scheduler_address_is_checked_up_front() -> None:
    assert get_settings(dask_scheduler="tcp://10.0.0.5:8786").dask_scheduler
    with pytest.raises(BadSettings, match=re.escape("SONOLAKE_DASK_SCHEDULER='10.0.0.5:8786'")):
        get_settings(dask_scheduler="10.0.0.5:8786")


def test_runner_dask_without_a_scheduler_is_a_usage_error(settings, tmp_path: Path) -> None:
    """Through the real command line: exit code 2 naming the missing flag, nothing landed."""
    env = {k: v for k, v in os.environ.items() if k != "SONOLAKE_DASK_SCHEDULER"}
    result = subprocess.run(
        [sys.executable, "-m", "sonolake", "sidecar", "--runner", "dask", "--once"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--dask-scheduler" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_scheduler_leaves_the_batch_planned(
    spool_template: Path, tmp_path: Path
) -> None:
    """No scheduler: the batch fails before anything is staged or committed, and stays planned;
    whichever runner lands it next lands it under the same number."""
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    sidecar = _sidecar(tmp_path, spool_template, nowhere, dask_connect_timeout_s=1)
    with pytest.raises(ClusterUnavailable, match="unreachable"):
        sidecar.land_once()
    assert sidecar.lake.transaction_version(AUDIO_CHUNKS, "sidecar") is None
    assert (tmp_path / "state" / "batches" / f"{1:012d}.json").exists()
    local = _sidecar(tmp_path, spool_template, None)
    assert _land_all(local) == [1, 2, 3]
    assert_landed_exactly_once(local.lake, GROUP)


def _run_until_landed(sidecar: Sidecar, timeout_s: float = 240.0) -> threading.Thread:
    """``Sidecar.run`` in a thread (the sidecar command's loop); stopped once the spool is empty."""
    stop = threading.Event()

    def loop() -> None:
        sidecar.run(0.2, stop)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    spool = sidecar.config.spool_dir
    deadline = time.monotonic() + timeout_s
    while sealed_segments(spool) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    return thread


@pytest.mark.dask
def test_worker_killed_mid_batch_every_chunk_lands_once(
    cluster: DaskCluster, spool_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL of a worker that has run part of a batch and holds its results: Dask re-runs
    the lost tasks on the survivor, and the sidecar still discards that attempt and reruns the
    batch, so nothing a re-run task wrote twice is ever committed."""
    victim, survivor = cluster.workers[0], cluster.workers[1]
    killed: list[int] = []
    pipelines: list[int] = []

    def kill_mid_batch(batch: int, executed_before: int) -> None:
        # The survivor is frozen, so the batch cannot finish: once the victim has executed
        # tasks of it while the survivor holds others, the kill lands in the middle of it.
        with cluster.client() as client:
            victim_at, survivor_at = map(cluster.worker_address, (victim, survivor))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                ran = client.run(executed_count, workers=[victim_at])[victim_at]
                if ran > executed_before and client.processing().get(survivor_at):
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("the batch never reached both workers")
        cluster.kill(victim)
        cluster.kill(survivor, signal.SIGCONT)
        killed.append(batch)

    def on_phase(phase: str, batch: int) -> None:
        if phase == "pipeline":
            pipelines.append(batch)
            if batch == 2 and not killed:
                executed = cluster.executed_counts()[cluster.worker_address(victim)]
                cluster.kill(survivor, signal.SIGSTOP)
                args = (batch, executed)
                threading.Thread(target=kill_mid_batch, args=args, daemon=True).start()

    sidecar = _sidecar(tmp_path / "side", spool_template, cluster.address, on_phase=on_phase)
    with caplog.at_level(logging.WARNING, logger="streaming.sidecar.driver"):
        _run_until_landed(sidecar)
    cluster.workers.remove(victim)
    assert killed == [2]
    assert pipelines.count(2) == 2, pipelines  # batch 2 ran again, nothing else did
    assert "worker(s) left during the run" in caplog.text
    assert_landed_exactly_once(sidecar.lake, GROUP)
    assert sidecar.lake.transaction_version(AUDIO_CHUNKS, "sidecar") == 3
    assert not list((tmp_path / "side" / "state").rglob("attempt-*"))


@pytest.mark.dask
def test_scheduler_restarted_between_batches_the_sidecar_recovers(
    cluster: DaskCluster, spool_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler (and with it its workers) goes away after batch 1 and comes back later
    at the same address, as a supervisor restarts it; the sidecar retries on its own."""
    restarted = threading.Event()

    def restart_later() -> None:
        time.sleep(1.0)  # the sidecar finds no scheduler meanwhile
        cluster.start_scheduler()
        cluster.start_worker()
        restarted.set()

    def on_phase(phase: str, batch: int) -> None:
        if phase == "retired" and batch == 1:
            cluster.stop_scheduler()
            threading.Thread(target=restart_later, daemon=True).start()

    sidecar = _sidecar(tmp_path / "side", spool_template, cluster.address, on_phase=on_phase)
    with caplog.at_level(logging.WARNING, logger="streaming.sidecar.driver"):
        _run_until_landed(sidecar)
    assert restarted.is_set()
    assert_landed_exactly_once(sidecar.lake, GROUP)
    assert sidecar.lake.transaction_version(AUDIO_CHUNKS, "sidecar") == 3
