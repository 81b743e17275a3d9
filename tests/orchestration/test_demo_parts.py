"""The demo's building blocks: child-process cleanup, location safety, corpora, the instance."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from real_lake import LakeEnv

from features.corpus import read_manifest, read_wav
from orchestration import prepare_dagster_home
from sonolake.demo.corpora import LABELS, synthetic_corpora
from sonolake.demo.processes import Child, Children
from sonolake.demo.run import MARKER_FILE, prepare_locations
from sonolake.errors import BadInput

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_children_are_stopped_when_the_demo_fails(tmp_path: Path) -> None:
    pids = []
    with pytest.raises(RuntimeError, match="boom"), Children(tmp_path) as children:
        for name in ("gateway", "sidecar"):
            child = children.start(Child(name, SLEEPER, dict(os.environ), tmp_path / f"{name}.log"))
            pids.append(child.pid)
        assert all(not _gone(pid) for pid in pids)
        raise RuntimeError("boom")
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


def test_demo_refuses_a_lake_it_did_not_make(empty_env: LakeEnv) -> None:
    settings = empty_env.settings
    lake = Path(settings.lake_root)
    (lake / "silver").mkdir(parents=True)
    (lake / "silver" / "precious.parquet").write_bytes(b"x")
    with pytest.raises(BadInput, match="--reset"):
        prepare_locations(settings, reset=False)
    assert (lake / "silver" / "precious.parquet").exists()

    prepare_locations(settings, reset=True)  # the user said so
    assert not lake.exists() and (settings.state_path / MARKER_FILE).exists()
    (lake / "bronze").mkdir(parents=True)
    prepare_locations(settings, reset=False)  # a previous demo's lake is wiped without asking
    assert not lake.exists()


def test_synthetic_corpora_fill_the_three_roles(tmp_path: Path) -> None:
    corpora = synthetic_corpora(tmp_path, serving_limit=60, drift_limit=60)
    assert corpora.synthetic
    training = read_manifest(corpora.training)
    assert {c.label for c in training} == set(LABELS)
    assert len({c.speaker for c in training}) >= 20, "at least 20 devices stream at once"
    serving = read_manifest(corpora.serving)
    assert len(serving) == 60 and "_silence_" not in {c.label for c in serving}
    drift = read_manifest(corpora.drift)
    samples, rate = read_wav(drift[0].path)
    assert rate == 8000 and samples.size > 0


def test_dagster_home_gives_a_loadable_instance(empty_env: LakeEnv) -> None:
    home = prepare_dagster_home(empty_env.settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
