"""The S3 endpoint vanishes and comes back while the real sidecar commits to an S3 lake.

A moto S3 server (the store: it keeps its objects in memory, so it lives for the whole test)
sits behind :mod:`s3_relay`, a TCP relay in its own process; the sidecar's lake endpoint is
the relay. A known spool (sessions of speech-like bursts, :mod:`sidecar_signals`) is landed by
a real ``sonolake sidecar --once`` in small batches. Each time a batch has been staged (its
commits are next) the test makes one outage:

- **kill** — the relay dies by SIGKILL a random moment into the commits (connections reset,
  new ones refused) and stays down for a few seconds, longer than delta-rs' own request
  retries last;
- **lost answer** — the relay is restarted in a mode in which it forwards the next
  ``PUT …/<table>/_delta_log/<version>.json`` (a Delta commit) to moto and dies the moment
  moto answers: the commit is in the store, but the sidecar never hears so. delta-rs retries
  the PUT-if-absent, finds the version taken, and must recognise the commit as its own.

Afterwards the tables are read straight from moto: every chunk in bronze once, every burst
in silver once, every result in gold once, session totals right, each table's commits
carrying each batch's app transaction at most once, and every batch fully landed.
"""

from __future__ import annotations

import json
import queue
import random
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from processes import S3Relay, child_env
from sidecar_signals import assert_landed_exactly_once, interleave, sessions, write_spool
from support import MOTO_KEY_ID, MOTO_SECRET, free_port, moto_server

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, PREDICTIONS, SESSIONS, Lake
from lake_schemas.lineage import APP_VERSION_KEY
from sonolake.wiring import s3_storage_options

pytestmark = [pytest.mark.integration, pytest.mark.s3]

BUCKET = "sonolake-chaos"
APP_ID = "sidecar"
TABLES = (AUDIO_CHUNKS, AUDIO_EVENTS, PREDICTIONS, SESSIONS)
LINE_TIMEOUT_S = 240.0
"""Longest wait for the sidecar's next output line (a batch under an outage, on 2 cores)."""


@dataclass(frozen=True)
class Outage:
    kind: str
    """``kill`` or ``lost-answer`` (see the module docstring)."""
    down_s: float
    """How long the endpoint stays away, seconds."""
    table: str = ""
    """For ``lost-answer``: the table path whose commit loses its answer."""


@dataclass
class OutageRun:
    outages: int = 0
    lost_answers: list[str] = field(default_factory=list)
    batches: int = 0
    table_commits: int = 0
    commits_skipped: int = 0
    retries: int = 0
    chunks_landed: int = 0
    chunks_lost: int = 0
    chunk_duplicates: int = 0
    duplicate_commits: int = 0

    def line(self) -> str:
        return (
            f"S3 outages: {self.outages} survived ({len(self.lost_answers)} lost commit "
            f"answers); {self.batches} batches, {self.table_commits} table commits "
            f"({self.commits_skipped} found already made), {self.retries} batch retries, "
            f"one sidecar process throughout; chunks landed {self.chunks_landed}, "
            f"lost {self.chunks_lost}, duplicates {self.chunk_duplicates}, duplicate commits "
            f"{self.duplicate_commits}"
        )


def _lines(proc: subprocess.Popen[str], out: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put(line.rstrip("\n"))
    out.put(None)


def run_outages(
    workdir: Path, cache: Path, plan: list[Outage], *, streams: int, per_segment: int, seed: int
) -> OutageRun:
    """Land ``streams`` sessions (35 spool records each, ``per_segment`` to a segment, two
    segments to a batch) through the relay, making the planned outages."""
    rng = random.Random(seed)
    group = sessions(streams, chunks=30, bursts=2)
    write_spool(workdir / "spool", interleave(s.records() for s in group), per_segment=per_segment)
    run = OutageRun()
    with moto_server(workdir, BUCKET) as moto_endpoint:
        relay = S3Relay(workdir, free_port(), int(moto_endpoint.rsplit(":", 1)[1])).start()
        env = child_env(
            cache,
            state_dir=str(workdir / "state"),
            spool_dir=str(workdir / "spool"),
            lake_uri=f"s3://{BUCKET}/lake",
            s3_endpoint_url=relay.endpoint,
            aws_access_key_id=MOTO_KEY_ID,
            aws_secret_access_key=MOTO_SECRET,
            aws_allow_http="true",
            sidecar_max_segments_per_batch="2",
            spool_retention_s="0",
        )
        log = open(workdir / "sidecar.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "sonolake", "sidecar", "--once"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_lines, args=(proc, lines), daemon=True).start()
        pending = list(plan)
        try:
            while (line := lines.get(timeout=LINE_TIMEOUT_S)) is not None:
                if line.startswith("{"):
                    report = json.loads(line)
                    run.batches += 1
                    run.table_commits += len(report["committed_rows"])
                    run.table_commits += len(report["skipped_tables"])
                    run.commits_skipped += len(report["skipped_tables"])
                if pending and line.endswith("phase=staged"):
                    _outage(relay, pending.pop(0), rng, proc)
                    run.outages += 1
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            relay.kill9()
        errors = (workdir / "sidecar.log").read_text(errors="replace")
        assert code == 0, f"sidecar exited {code} (it should have retried): {errors[-3000:]}"
        assert not pending, f"{len(pending)} outages never ran (too few batches)"
        run.lost_answers = relay.lost_responses
        run.retries = errors.count("object store unavailable")
        lake = Lake(f"s3://{BUCKET}/lake", _options(moto_endpoint))
        bronze = lake.read(AUDIO_CHUNKS, columns=["session_id", "seq"])
        keys = list(zip(bronze["session_id"].to_pylist(), bronze["seq"].to_pylist(), strict=True))
        run.chunks_landed = len(keys)
        run.chunks_lost = len(
            {(s.session_id, q) for s in group for q in range(s.chunks)} - set(keys)
        )
        run.chunk_duplicates = len(keys) - len(set(keys))
        print(run.line())
        assert_landed_exactly_once(lake, group)
        assert lake.transaction_version(AUDIO_CHUNKS, APP_ID) == run.batches
        unlanded = [
            p.name
            for p in (workdir / "state" / "sidecar" / "batches").glob("*.json")
            if not p.with_suffix(".landed").exists()
        ]
        assert not unlanded, f"batches left half-landed: {unlanded}"
        for spec in TABLES:
            versions = Counter(
                commit[APP_VERSION_KEY]
                for commit in lake.history(spec)
                if APP_VERSION_KEY in commit
            )
            run.duplicate_commits += sum(n - 1 for n in versions.values())
    return run


def _outage(
    relay: S3Relay, outage: Outage, rng: random.Random, sidecar: subprocess.Popen[str]
) -> None:
    """One outage, started as a batch's commits begin; returns once the endpoint is back."""
    if outage.kind == "lost-answer":
        relay.kill9()
        relay.start(lose_response_of=rf"PUT \S+/{outage.table}/_delta_log/0*[1-9]\d*\.json ")
        while not relay.wait_for_lost_response(0.2):  # the next commit to that table
            assert sidecar.poll() is None, f"the sidecar ended before a commit to {outage.table}"
    else:
        threading.Event().wait(rng.uniform(0.0, 0.5))
        relay.kill9()
    threading.Event().wait(outage.down_s)
    relay.start()


def _check(run: OutageRun, plan: list[Outage], *, outlasts_delta_rs: bool) -> None:
    """``outlasts_delta_rs``: an outage in the plan is longer than delta-rs' own request
    retries (2–6 s), so the sidecar's batch retry must have run."""
    assert run.outages == len(plan)
    assert len(run.lost_answers) == sum(o.kind == "lost-answer" for o in plan), run.lost_answers
    assert run.duplicate_commits == 0, run.line()
    if outlasts_delta_rs:
        assert run.retries > 0, run.line()
    assert run.chunks_lost == run.chunk_duplicates == 0


def test_a_batch_is_retried_while_the_store_is_away_and_lands_once(tmp_path: Path) -> None:
    """The retry itself, in process: delta-rs told not to retry a request (``max_retries``
    0), the endpoint down when the batch starts and back 2 s later. Without the sidecar's
    retry (``store_retry_s=0``) the batch fails; with it the batch lands, once."""
    from streaming.sidecar.driver import Sidecar, SidecarConfig

    group = sessions(2, chunks=20, bursts=1)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=100)
    with moto_server(tmp_path, BUCKET) as moto_endpoint:
        relay = S3Relay(tmp_path, free_port(), int(moto_endpoint.rsplit(":", 1)[1]))
        options = _options(relay.endpoint) | {"max_retries": "0"}
        lake = Lake(f"s3://{BUCKET}/lake", options)

        def sidecar(retry_s: float) -> Sidecar:
            config = SidecarConfig(tmp_path / "spool", tmp_path / "state", store_retry_s=retry_s)
            return Sidecar(lake, config)

        with pytest.raises(OSError, match="S3"):
            sidecar(0).land_next()
        back = threading.Timer(2.0, relay.start)
        back.start()
        try:
            report = sidecar(60).land_next()
        finally:
            back.join()
            relay.kill9()
        assert report is not None and report.committed_rows[AUDIO_CHUNKS.name] == 40
        assert_landed_exactly_once(Lake(f"s3://{BUCKET}/lake", _options(moto_endpoint)), group)


def _options(endpoint: str) -> dict[str, str]:
    return s3_storage_options(
        region="us-east-1",
        endpoint_url=endpoint,
        access_key_id=MOTO_KEY_ID,
        secret_access_key=MOTO_SECRET,
        allow_http=True,
    )


SHORT_PLAN = [
    Outage("lost-answer", 1.0, "bronze/audio_chunks"),
    Outage("kill", 4.0),
]


def test_s3_endpoint_outages_during_sidecar_commits_land_every_batch_exactly_once(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    run = run_outages(tmp_path, bytecode_cache, SHORT_PLAN, streams=3, per_segment=35, seed=3)
    _check(run, SHORT_PLAN, outlasts_delta_rs=False)


LONG_PLAN = [
    Outage("lost-answer", 0.5, "bronze/audio_chunks"),
    Outage("kill", 3.0),
    Outage("lost-answer", 2.0, "silver/audio_events"),
    Outage("kill", 8.0),
    Outage("lost-answer", 1.0, "gold/predictions"),
    Outage("kill", 0.5),
    Outage("lost-answer", 4.0, "silver/sessions"),
    Outage("kill", 20.0),
    Outage("lost-answer", 0.5, "bronze/audio_chunks"),
    Outage("kill", 12.0),
]


@pytest.mark.chaos
def test_chaos_ten_s3_outages_and_lost_commit_answers(tmp_path: Path, bytecode_cache: Path) -> None:
    run = run_outages(tmp_path, bytecode_cache, LONG_PLAN, streams=8, per_segment=10, seed=2026)
    _check(run, LONG_PLAN, outlasts_delta_rs=True)
