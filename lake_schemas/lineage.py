"""Lineage in every Delta commit: who wrote it, under which app transaction, from which code.

It lives in the commit's ``commitInfo`` (delta-rs ``custom_metadata``), so it travels with the
table itself: ``DeltaTable.history()`` shows it to any Delta client, and the metadata catalog
copies it per version.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_NAME = "sonolake"
_GIT_TIMEOUT_S = 5.0

WRITER_KEY = "writer"
APP_ID_KEY = "app_id"
APP_VERSION_KEY = "app_version"
CODE_VERSION_KEY = "code_version"


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>`` plus ``+g<git sha>`` when the code runs from a git checkout."""
    try:
        version = metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return version
    sha = result.stdout.strip()
    return f"{version}+g{sha}" if result.returncode == 0 and sha else version


def commit_metadata(
    writer: str, app_id: str | None = None, app_version: int | None = None
) -> dict[str, Any]:
    """The custom commit metadata of one commit (JSON values only)."""
    info: dict[str, Any] = {WRITER_KEY: writer, CODE_VERSION_KEY: code_version()}
    if app_id is not None:
        info[APP_ID_KEY] = app_id
        info[APP_VERSION_KEY] = app_version
    return info
