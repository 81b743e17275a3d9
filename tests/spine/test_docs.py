"""The README's configuration table names every setting, so docs cannot fall behind the code."""

from __future__ import annotations

from support import REPO_ROOT

from sonolake.settings import Settings


def test_every_setting_is_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`SONOLAKE_{n.upper()}`" not in readme]
    assert not missing, f"README.md configuration table lacks: {missing}"


def test_readme_leads_with_the_two_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    head = readme[: readme.index("##")]
    assert "make demo" in head and "make test" in head
