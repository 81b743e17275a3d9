"""`sonolake dagster-home`: prepare the Dagster instance folder and print it.

``make dev`` runs ``DAGSTER_HOME=$(sonolake dagster-home) dg dev`` (or ``dagster dev``), so the
UI, the daemon and the demo share one instance under ``Settings.dagster_home``. Bad settings
stop it like every command (one line per problem, exit code 2) before anything is written.
"""

from __future__ import annotations

import typer

from sonolake.settings import get_settings


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""

    @app.command("dagster-home")
    def dagster_home() -> None:
        """Create the Dagster home with its dagster.yaml (kept if present); print its path."""
        from orchestration import prepare_dagster_home

        typer.echo(str(prepare_dagster_home(get_settings())))
