"""The ``sonolake`` command line: one entry point, one sub-command module per area.

Each module under :mod:`sonolake.commands` registers its commands on the shared Typer app, so
adding an area never means editing a long central file.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from sonolake.commands import (
    demo,
    dev,
    lake,
    models,
    privacy,
    reprocess,
    serving,
    sidecar,
    streaming,
    training,
)
from sonolake.errors import BadInput, WorkFailed
from sonolake.secrets import mask_text

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
    from sonolake import secrets
    from sonolake.settings import get_settings

    # every bad setting is reported before any command starts (exit code 2); from here on no
    # log line, error or traceback of this process prints a configured secret
    secrets.install(get_settings())


for module in (
    lake,
    streaming,
    sidecar,
    reprocess,
    training,
    models,
    serving,
    privacy,
    demo,
    dev,
):
    module.register(app)

_err = Console(stderr=True)


@app.command("config")
def show_config() -> None:
    """Print the effective settings (secrets masked) and where each derived path points."""
    from rich.markup import escape
    from rich.table import Table

    from sonolake import wiring
    from sonolake.secrets import mask_text, masked_setting
    from sonolake.settings import get_settings

    settings = get_settings()
    table = Table("setting", "value")
    for name in type(settings).model_fields:
        table.add_row(name, escape(masked_setting(name, getattr(settings, name))))
    for name in ("lake_root", "spool_path", "mlflow_tracking_uri", "dagster_home"):
        table.add_row(f"-> {name}", escape(mask_text(str(getattr(settings, name)))))
    catalog = wiring.lake(settings).catalog_file
    table.add_row("-> catalog_file", str(catalog) if catalog else "none (an s3:// lake has none)")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map our errors to the documented exit codes (0, 1, 2)."""
    try:
        app(args=argv, standalone_mode=False)
    except BadInput as exc:
        _err.print(f"[bold red]error:[/] {mask_text(str(exc))}", soft_wrap=True)  # a line each
        return 2
    except WorkFailed as exc:
        _err.print(f"[bold red]failed:[/] {mask_text(str(exc))}", soft_wrap=True)
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
