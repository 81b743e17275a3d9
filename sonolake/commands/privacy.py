"""`sonolake erase --device ID [--yes]`: remove one device's data everywhere, audited.

Without ``--yes`` it is a dry run: it prints what would be removed (rows per table, spool
records) and exits 2, so a script that forgot the flag never erases by accident. An unknown
device (no row in any table, no record in the spool) exits 1 and names what to check. With
``--yes`` it erases under the spool's erasure lock (a running sidecar pauses between batches),
then prints the audit record; a data file that still holds the device after the vacuum fails
the command (exit 1) with the files listed. See docs/privacy.md.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import get_settings


def erase(
    device: Annotated[str, typer.Option("--device", help="The device id to erase.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Really erase (without it: a dry run that exits 2).")
    ] = False,
) -> None:
    """Remove one device's rows from every lake table and the spool; record it in the audit."""
    from lake_schemas.erasure import plan_erasure
    from sonolake import wiring
    from streaming.spool.erasure import count_device_records, erase_everywhere

    if not device.strip():
        raise BadInput("--device must name a device id, e.g. --device spk-1a2b3c")
    settings = get_settings()
    lake = wiring.lake(settings)
    plan = plan_erasure(lake, device)
    spool_records = count_device_records(settings.spool_path, device)
    if plan.total_rows == 0 and spool_records == 0:
        raise WorkFailed(
            f"device {device!r} has no rows in the lake at {settings.lake_root} and no records "
            f"in the spool at {settings.spool_path}; nothing was erased. Check the id, e.g. "
            'sonolake sql "select distinct device_id from silver.sessions"'
        )
    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table("where", "rows")
    for name, rows in sorted(plan.rows.items()):
        table.add_row(name, str(rows))
    table.add_row("spool (sealed and landed segments)", str(spool_records))
    console.print(table)
    if not yes:
        raise BadInput(
            f"dry run: nothing was removed. Run again with --yes to erase device {device!r}."
        )
    result, purge = erase_everywhere(lake, settings.spool_path, device, requested_by="cli")
    summary = {
        "erasure_id": result.erasure_id,
        "rows_removed": result.rows,
        "files_vacuumed": result.files_vacuumed,
        "spool_records_removed": purge.records,
        "spool_segments_rewritten": purge.segments_rewritten,
        "quarantined_segments_deleted": purge.quarantined_deleted,
        "stream_headers_deleted": purge.primings_deleted,
    }
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    if result.leftover_files:
        raise WorkFailed(
            "erased the rows, but these data files still hold the device: "
            + ", ".join(result.leftover_files)
        )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("erase")(erase)
