"""``sonolake train``'s bad input: exit code 2 with what to change (the whole path from the shell
is ``test_train_promote_serve.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonolake.cli import main
from sonolake.settings import Settings


def test_unknown_preset_is_bad_input(settings: Settings, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--preset", "huge"]) == 2
    assert "quick" in capsys.readouterr().err


def test_missing_data_says_where_to_point(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", "--preset", "quick", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "SONOLAKE_DATA_DIR" in capsys.readouterr().err
