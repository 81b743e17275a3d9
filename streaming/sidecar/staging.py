"""A micro-batch's staged outputs: Arrow files written by the pipeline, read by the driver.

Each output element becomes one part file ``<output>-<uuid>.arrow`` (written to a temporary
name, fsync'd, renamed). The driver trusts a batch's parts only after the pipeline finished
and it wrote the ``_DONE`` marker; until then a half-staged folder is simply deleted.

One output may instead be *held*: on the in-process runner the bronze rows, which carry the
batch's audio, are handed to the driver in this process's memory (:func:`hold_part`), not
written a second time before their Parquet commit. Writing and syncing them cost about a
third of a large batch's wall time. A held part lives only as long as the process that ran
the pipeline; a process that finds a batch whose audio was held elsewhere, and not yet
committed, runs the batch's pipeline again from its durable inputs (see
:mod:`streaming.sidecar.driver`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from streaming.sidecar.records import ArrowRows

CARRY_FILES = ("carry_keys", "carry_stats")
"""The carry's two tables: dedup keys of recent chunks, level statistics of uncovered ones."""


def write_table_atomic(path: Path, table: pa.Table) -> None:
    """Arrow IPC file written to a temporary name, fsync'd, then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        with pa.ipc.new_stream(out, table.schema) as writer:
            writer.write_table(table)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


_held: dict[tuple[str, str], list[pa.Table]] = {}
_held_lock = threading.Lock()


def hold_part(folder: Path, name: str, table: pa.Table) -> None:
    """Stage ``table`` under ``name`` in ``folder`` in this process's memory (no file)."""
    with _held_lock:
        _held.setdefault((str(folder), name), []).append(table)


def release_held(folder: Path) -> None:
    """Forget every part held for ``folder`` (the batch committed, or is staged again)."""
    with _held_lock:
        for key in [key for key in _held if key[0] == str(folder)]:
            del _held[key]


def read_parts(folder: Path, name: str, schema: pa.Schema | None) -> pa.Table:
    """Every part staged under ``name`` in ``folder``, held or filed, as one table (empty
    when none)."""
    with _held_lock:
        tables = list(_held.get((str(folder), name), ()))
    tables += [
        pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        for path in sorted(Path(folder).glob(f"{name}-*.arrow"))
    ]
    tables = [t for t in tables if t.num_rows]
    if tables:
        return pa.concat_tables(tables)
    return schema.empty_table() if schema is not None else pa.table({})


def load_carries(folder: str) -> tuple[ArrowRows, ArrowRows]:
    """The carry a batch staged for the next one (read inside the pipeline, so the carry never
    travels inside the pipeline's serialized graph)."""
    from streaming.sidecar.landing import KEYS_SCHEMA
    from streaming.sidecar.levels import STATS_SCHEMA
    from streaming.sidecar.records import ArrowRows

    return (
        ArrowRows(read_parts(Path(folder), CARRY_FILES[0], KEYS_SCHEMA)),
        ArrowRows(read_parts(Path(folder), CARRY_FILES[1], STATS_SCHEMA)),
    )
