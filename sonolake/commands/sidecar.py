"""`sonolake` commands for the sidecar area (filled in by the work that owns it)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
