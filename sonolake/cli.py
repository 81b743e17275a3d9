"""The ``sonolake`` command line: one entry point, one sub-command module per area.

Each module under :mod:`sonolake.commands` registers its commands on the shared Typer app, so
adding an area never means editing a long central file.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from sonolake.commands import demo, lake, models, reprocess, sidecar, streaming, training
from sonolake.errors import BadInput, WorkFailed

app = typer.Typer(
    name="sonolake",
    help="Sonolake: audio lakehouse and MLOps platform with a streaming sidecar.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Sonolake: audio lakehouse and MLOps platform with a streaming sidecar."""
    from sonolake.settings import get_settings

    get_settings()  # every bad setting is reported before any command starts (exit code 2)


for module in (lake, streaming, sidecar, reprocess, training, models, demo):
    module.register(app)

_err = Console(stderr=True)


@app.command("config")
def show_config() -> None:
    """Print the effective settings (secrets masked) and where each derived path points."""
    from rich.table import Table

    from sonolake import wiring
    from sonolake.settings import get_settings

    settings = get_settings()
    table = Table("setting", "value")
    for name, value in settings.model_dump().items():
        table.add_row(name, "***" if "secret" in name and value else str(value))
    for name in ("lake_root", "spool_path", "mlflow_tracking_uri", "dagster_home"):
        table.add_row(f"-> {name}", str(getattr(settings, name)))
    catalog = wiring.lake(settings).catalog_file
    table.add_row("-> catalog_file", str(catalog) if catalog else "none (an s3:// lake has none)")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map our errors to the documented exit codes (0, 1, 2)."""
    try:
        app(args=argv, standalone_mode=False)
    except BadInput as exc:
        _err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)  # one line per problem
        return 2
    except WorkFailed as exc:
        _err.print(f"[bold red]failed:[/] {exc}", soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        _err.print("aborted")
        return 1
    except Exception as exc:  # click usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is not None and hasattr(exc, "show"):
            exc.show()
            return int(code)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
