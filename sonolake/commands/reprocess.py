"""`sonolake reprocess`: re-segment and re-score a time range of bronze with a chosen model.

Re-derivation is an explicit batch job (:mod:`streaming.reprocess`), never the sidecar's hot
path: it reads the chunks captured in ``[--since, --until)``, finds utterances with the
gateway's own segmenter, classifies them with ``--model`` (an alias such as ``champion``, a
version number, or a bundle folder) and appends a new, versioned set of ``gold.predictions``
rows under its own ``run_id`` (printed at the end). Exit codes: 0 done, 1 the work failed,
2 bad input (an unknown model, a bad time, an empty range).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from sonolake.errors import BadInput
from sonolake.settings import get_settings


def _utc(value: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"{option} {value!r} is not an ISO time; use e.g. 2026-05-01T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_reprocess(
    since: Annotated[str, typer.Option("--since", help="Start of the range (ISO time, UTC).")],
    until: Annotated[str, typer.Option("--until", help="End of the range (ISO time, UTC).")],
    model: Annotated[
        str, typer.Option("--model", help="champion, challenger, a version, or a bundle folder.")
    ] = "champion",
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run (default: a new id).")
    ] = None,
) -> None:
    """Re-segment and re-score a time range of bronze; write a new set of predictions."""
    from lake_schemas import AUDIO_CHUNKS, PREDICTIONS
    from models.registry import UnknownModel
    from models.serving import ServingEngine
    from sonolake import wiring
    from streaming.reprocess import rederive

    start, end = _utc(since, "--since"), _utc(until, "--until")
    if end <= start:
        raise BadInput(f"--until {until} must be after --since {since}")
    settings = get_settings()
    lake = wiring.lake(settings)
    try:
        resolved = wiring.registry(settings, lake).resolve(model)
    except UnknownModel as exc:
        raise BadInput(str(exc)) from None
    engine = ServingEngine.from_bundle(resolved.bundle_dir, model_version=resolved.version)
    chunks = lake.read(AUDIO_CHUNKS, filter=[("event_time", ">=", start), ("event_time", "<", end)])
    if chunks.num_rows == 0:
        raise BadInput(f"no chunks in bronze between {start.isoformat()} and {end.isoformat()}")
    sys.stderr.write(f"reprocessing {chunks.num_rows} chunks with model {model}…\n")
    result = rederive(chunks, engine, run_id=run_id)
    if result.predictions.num_rows:
        lake.append(PREDICTIONS, result.predictions, writer=f"sonolake reprocess {result.run_id}")
    summary = {
        "run_id": result.run_id,
        "model_version": engine.model_version,
        "sessions": result.sessions,
        "chunks": result.chunks,
        "predictions": result.predictions.num_rows,
    }
    sys.stdout.write(json.dumps(summary) + "\n")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("reprocess")(run_reprocess)
