"""kill -9 of the real `sonolake sidecar` process at every phase and at random moments.

A known set of chunks is written to the spool with the real SpoolWriter. The sidecar runs as
a subprocess and dies by SIGKILL: at each named phase (it kills itself there, so the moment is
exact: before the batch is recorded, after, as the pipeline starts, between table commits,
after landing, after retiring) and at random moments while the pipeline runs. After every kill
it is started again; at the end bronze must hold every chunk exactly once and silver every
speech segment exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from pathlib import Path

from sidecar_signals import (
    assert_landed_exactly_once,
    interleave,
    process_env,
    sessions,
    write_spool,
)
from support import REPO_ROOT

from lake_schemas import Lake

SIDECAR = [str(REPO_ROOT / ".venv" / "bin" / "sonolake"), "sidecar", "--once"]
KILL_PLAN: list[tuple[str, str]] = [
    ("phase", "planned"),
    ("phase", "recorded"),
    ("phase", "pipeline"),
    ("during", "pipeline"),
    ("phase", "staged"),
    ("phase", "committed:bronze.audio_chunks"),
    ("phase", "committed:silver.audio_events"),
    ("during", "pipeline"),
    ("phase", "committed:silver.sessions"),
    ("phase", "landed"),
    ("phase", "retired"),
    ("random", ""),
    ("during", "pipeline"),
]
"""(how, where): ``phase`` — the sidecar kills itself at that phase; ``during`` — the test
kills it a random 0–0.5 s after it enters that phase; ``random`` — 0.5–2.5 s after start.
A small batch lands in well under 0.1 s, so the spool holds enough batches (36 segments, two
a batch) that a kill after a draw of the timer still finds one running, not a drained spool."""


def _env(tmp_path: Path, cache: Path, crash_at: str | None) -> dict[str, str]:
    settings = {
        "state_dir": str(tmp_path / "state"),
        "lake_uri": str(tmp_path / "lake"),
        "spool_dir": str(tmp_path / "spool"),
        "sidecar_max_segments_per_batch": "2",
        "spool_retention_s": "0",
    }
    if crash_at:
        settings["sidecar_crash_at"] = crash_at
    return process_env(cache, **settings)


def _run_once(
    tmp_path: Path, cache: Path, how: str, where: str, rng: random.Random
) -> tuple[int, list[str]]:
    """Start the sidecar, kill it as planned; returns its exit code and its phase lines."""
    proc = subprocess.Popen(
        SIDECAR,
        cwd=tmp_path,
        env=_env(tmp_path, cache, where if how == "phase" else None),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    timer = None

    def kill() -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)

    if how == "random":
        timer = threading.Timer(rng.uniform(0.5, 2.5), kill)
        timer.start()
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if how == "during" and line.strip().endswith(f"phase={where}") and timer is None:
            timer = threading.Timer(rng.uniform(0.0, 0.5), kill)
            timer.start()
    code = proc.wait(timeout=120)
    if timer is not None:
        timer.cancel()
    proc.stdout.close()
    return code, lines


def test_kill_9_at_every_phase_lands_every_chunk_and_segment_exactly_once(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    group = sessions(6, chunks=30, bursts=2)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=5)
    rng = random.Random(20240501)
    kills, killed_in = 0, []
    for how, where in KILL_PLAN:
        code, lines = _run_once(tmp_path, bytecode_cache, how, where, rng)
        if code == -signal.SIGKILL:
            kills += 1
            # A phase run can only die where it kills itself (its last line may be another
            # thread's); the others died wherever the timer caught them.
            if how == "phase":
                killed_in.append(f"phase={where}")
            else:
                killed_in.append(lines[-1] if lines else "start-up")
        else:
            assert code == 0, f"sidecar failed (exit {code}) after {lines[-3:]}"
    code, lines = _run_once(tmp_path, bytecode_cache, "none", "", rng)
    assert code == 0, lines[-5:]
    assert kills >= 10, f"only {kills} kills landed: {killed_in}"
    phases = {line.rsplit("phase=", 1)[-1] for line in killed_in if "phase=" in line}
    assert {"recorded", "pipeline", "committed:bronze.audio_chunks", "landed"} <= phases
    assert_landed_exactly_once(Lake(tmp_path / "lake"), group)
