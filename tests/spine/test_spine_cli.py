"""The command line's documented exit codes: 0 success, 1 failure, 2 bad usage or input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from support import REPO_ROOT

from sonolake.cli import app, main
from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import Settings


def test_config_prints_effective_settings(settings: object, capsys: pytest.CaptureFixture) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "lake_uri" in out and "catalog_file" in out


def test_unknown_command_is_usage_error() -> None:
    assert main(["no-such-command"]) == 2


def test_error_classes_map_to_exit_codes(capsys: pytest.CaptureFixture) -> None:
    probe = typer.Typer()

    @probe.callback()
    def _group() -> None:
        """A throwaway group so the probe command keeps its name."""

    @probe.command()
    def fail(kind: str) -> None:
        raise BadInput("sample_rate=7 is not supported") if kind == "bad" else WorkFailed("gate")

    app.add_typer(probe, name="probe-exit-codes")
    try:
        assert main(["probe-exit-codes", "fail", "bad"]) == 2
        assert "sample_rate=7" in capsys.readouterr().err
        assert main(["probe-exit-codes", "fail", "work"]) == 1
    finally:
        app.registered_groups.pop()


def test_entry_point_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sonolake", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "config" in proc.stdout


def test_dagster_home_is_prepared_and_printed(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dagster-home"]) == 0
    assert capsys.readouterr().out.strip() == str(settings.dagster_home)
    assert "freshness" in (settings.dagster_home / "dagster.yaml").read_text()


def test_a_gateway_worker_keeps_trying_to_open_the_model_registry(tmp_path: Path) -> None:
    """A registry that cannot be opened at start (here: a file stands where its folder must
    be, as a fresh MLflow store being created by another worker at the same moment) is tried again,
    so the worker ends up following the champion instead of staying modelless."""
    import asyncio

    from sonolake.commands.streaming import open_engine_until_stopped
    from sonolake.settings import Settings

    store = tmp_path / "not-yet" / "mlflow.db"
    store.parent.write_text("not a folder")  # nothing can be created below it
    settings = Settings(
        state_dir=tmp_path / "state",
        mlflow_uri=f"sqlite:///{store}",
        serving_poll_interval_s=0.2,
    )

    async def scenario() -> object:
        stop = asyncio.Event()
        opening = asyncio.create_task(open_engine_until_stopped(settings, stop))
        await asyncio.sleep(1.0)
        assert not opening.done(), "the registry cannot be opened yet"
        store.parent.unlink()
        store.parent.mkdir()
        engine = await asyncio.wait_for(opening, 60)
        stop.set()
        return engine

    engine = asyncio.run(scenario())
    assert engine is not None and not engine.loaded  # type: ignore[attr-defined]
    engine.close()  # type: ignore[attr-defined]
