"""Per-device erasure: remove one device's rows from every lake table that holds device data.

Which tables: derived from the table specs, never listed by hand, so a table added later is
covered as soon as it has one of the key columns. A table with a ``device_id`` column is erased
by that column; a table without one but with ``session_id`` (dead letters) by the device's
sessions; one with only ``event_id`` by the device's events. The sessions and events are
collected from the device tables before anything is deleted. Tables with none of these
(drift reports, model evaluations: aggregates) hold no per-device data and are left alone.

Steps (:func:`erase_device`): Delta ``DELETE`` per table (delta-rs rewrites the files that held
the rows, with no deletion vectors), then a vacuum of the removed files with a retention of
:data:`ERASURE_VACUUM_RETENTION_HOURS` (0: the override of Delta's 7-day default, for this
purpose only), then a scan of every data file left under each table that proves none holds the
device, then one audit row in ``monitoring.erasures`` (the device's SHA-256, tables, row
counts, never the data). That row is also the tombstone writers check
(:class:`ErasedDevices`), so a batch staged before the erasure cannot bring the rows back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake.fs import DeltaStorageHandler

from lake_schemas import delta
from lake_schemas.lake import Lake
from lake_schemas.tables import ALL_TABLES, ERASURES, TableSpec

log = logging.getLogger(__name__)

WRITER = "lake_schemas.erasure"
ERASURE_KEYS = ("device_id", "session_id", "event_id")
"""Key columns an erasure deletes by, in order of preference."""
ERASURE_VACUUM_RETENTION_HOURS = 0.0
"""Vacuum retention (hours) used after an erasure: the removed files go at once, so no older
table version that still references them can be read afterwards (documented in docs/privacy.md)."""
PREDICATE_CHUNK = 500
"""Most key values in one ``IN (...)`` delete predicate."""


@dataclass(frozen=True)
class ErasureTarget:
    """A table that holds device data, and the column its rows are erased by."""

    spec: TableSpec
    column: str


def erasure_targets(specs: Iterable[TableSpec] = ALL_TABLES) -> list[ErasureTarget]:
    """Every table with a key column, device-keyed tables first (they name the sessions)."""
    targets = []
    for spec in specs:
        column = next((c for c in ERASURE_KEYS if c in spec.schema.names), None)
        if column is not None:
            targets.append(ErasureTarget(spec, column))
    return sorted(targets, key=lambda t: ERASURE_KEYS.index(t.column))


def device_hash(device_id: str) -> str:
    """SHA-256 hex of a device id: what the audit keeps instead of the id."""
    return hashlib.sha256(device_id.encode()).hexdigest()


@dataclass
class ErasurePlan:
    """What an erasure of one device would remove (the dry run), table by table."""

    device_id: str
    rows: dict[str, int] = field(default_factory=dict)
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``session_id`` / ``event_id`` → the device's values, for tables keyed by them."""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def values_for(self, target: ErasureTarget) -> tuple[str, ...]:
        if target.column == "device_id":
            return (self.device_id,)
        return self.keys.get(target.column, ())


@dataclass
class ErasureResult:
    """What an erasure did; ``leftover_files`` must be empty for it to count as done."""

    erasure_id: str
    device_id: str
    rows: dict[str, int]
    files_vacuumed: int
    leftover_files: list[str]
    started_at: datetime
    completed_at: datetime

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _key_values(table: pa.Table, column: str) -> set[str]:
    values = pc.unique(pc.cast(table.column(column), pa.string())).to_pylist()
    return {v for v in values if v is not None}


def _isin(column: str, values: Sequence[str]) -> pc.Expression:
    return pc.field(column).isin(pa.array(list(values), pa.string()))


def plan_erasure(
    lake: Lake, device_id: str, targets: Sequence[ErasureTarget] | None = None
) -> ErasurePlan:
    """Count the device's rows in every target table (reads only the key columns)."""
    plan = ErasurePlan(device_id)
    targets = list(targets) if targets is not None else erasure_targets()
    collected: dict[str, set[str]] = {"session_id": set(), "event_id": set()}
    for target in targets:
        spec = target.spec
        if not lake.exists(spec):
            continue
        if target.column == "device_id":
            wanted = [c for c in ("device_id", *collected) if c in spec.schema.names]
            rows = lake.read(spec, columns=wanted, filter=[("device_id", "=", device_id)])
            for column, found in collected.items():
                if column in rows.column_names:
                    found.update(_key_values(rows, column))
            plan.rows[spec.name] = rows.num_rows
            continue
        keys = tuple(sorted(collected[target.column]))
        plan.keys[target.column] = keys
        if keys:
            rows = lake.read(spec, columns=[target.column], filter=_isin(target.column, keys))
            plan.rows[spec.name] = rows.num_rows
    return plan


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def delete_predicates(column: str, values: Sequence[str]) -> list[str]:
    """SQL predicates for ``DELETE``: ``column IN ('a', 'b')``, at most a chunk per predicate."""
    return [
        f'"{column}" IN ({", ".join(_quote(v) for v in values[i : i + PREDICATE_CHUNK])})'
        for i in range(0, len(values), PREDICATE_CHUNK)
    ]


def _delete(lake: Lake, spec: TableSpec, predicate: str, writer: str) -> int:
    """One Delta ``DELETE``; returns the rows it removed. Retried when it loses a race."""

    def attempt() -> int:
        table = delta.open_table(lake.uri(spec), lake.storage_options)
        if table is None:
            return 0
        metrics = table.delete(predicate, commit_properties=delta.commit_properties(writer))
        try:
            lake.catalog.sync(spec.name, table)
        except Exception:  # the delete is committed; the next sync records the gap
            log.warning("could not record %s in the metadata catalog", spec.name, exc_info=True)
        return int(metrics.get("num_deleted_rows", 0))

    return delta.with_commit_retries(attempt)


def _filesystem(lake: Lake, spec: TableSpec) -> tuple[pafs.FileSystem, str]:
    """A filesystem rooted where the table's files are, with the lake's storage options."""
    uri = lake.uri(spec)
    if not lake.is_remote:
        return pafs.LocalFileSystem(), uri
    return pafs.PyFileSystem(DeltaStorageHandler(uri, lake.storage_options)), ""


def data_files(lake: Lake, spec: TableSpec) -> list[str]:
    """Every Parquet file under the table's folder, referenced by a version or not."""
    fs, base = _filesystem(lake, spec)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and info.path.endswith(".parquet")
        and "_delta_log" not in info.path
    )


def files_holding(lake: Lake, spec: TableSpec, column: str, values: Sequence[str]) -> list[str]:
    """The table's data files (any version's) that still hold a row with one of ``values``.

    Reads the key column of every file, so it costs one column scan of the table's history.
    """
    if not values:
        return []
    fs, _ = _filesystem(lake, spec)
    wanted = pa.array(list(values), pa.string())
    found = []
    for path in data_files(lake, spec):
        column_data = pq.read_table(path, columns=[column], filesystem=fs).column(column)
        if pc.any(pc.is_in(pc.cast(column_data, pa.string()), wanted)).as_py():
            found.append(path)
    return found


def erase_device(
    lake: Lake,
    device_id: str,
    *,
    requested_by: str,
    plan: ErasurePlan | None = None,
    spool_records_removed: int = 0,
) -> ErasureResult:
    """Delete the device's rows everywhere, vacuum what held them, prove it, audit it.

    Callers that share the lake with a sidecar hold the spool's erasure lock around this (see
    :mod:`streaming.spool.erasure`), so no batch commits between the delete and the audit row.
    """
    started = datetime.now(UTC)
    targets = erasure_targets()
    plan = plan or plan_erasure(lake, device_id, targets)
    removed: dict[str, int] = {}
    vacuumed = 0
    leftovers: list[str] = []
    for target in targets:
        spec = target.spec
        values = plan.values_for(target)
        if not plan.rows.get(spec.name) or not values:
            continue
        removed[spec.name] = sum(
            _delete(lake, spec, predicate, WRITER)
            for predicate in delete_predicates(target.column, sorted(values))
        )
        vacuumed += len(lake.vacuum(spec, ERASURE_VACUUM_RETENTION_HOURS, writer=WRITER))
    for target in targets:
        if lake.exists(target.spec):
            leftovers += files_holding(lake, target.spec, target.column, plan.values_for(target))
    completed = datetime.now(UTC)
    result = ErasureResult(
        uuid.uuid4().hex, device_id, removed, vacuumed, leftovers, started, completed
    )
    lake.append(
        ERASURES,
        audit_row(result, requested_by, spool_records_removed),
        writer=WRITER,
    )
    return result


def audit_row(result: ErasureResult, requested_by: str, spool_records_removed: int) -> pa.Table:
    """The audit table's row for one erasure: hashes and counts, never the data."""
    row = {
        "erasure_id": result.erasure_id,
        "device_sha256": device_hash(result.device_id),
        "requested_by": requested_by,
        "started_at": result.started_at,
        "completed_at": result.completed_at,
        "tables_json": json.dumps(result.rows, sort_keys=True),
        "rows_removed": result.total_rows,
        "files_vacuumed": result.files_vacuumed,
        "spool_records_removed": spool_records_removed,
        "vacuum_retention_hours": ERASURE_VACUUM_RETENTION_HOURS,
        "erasure_date": result.completed_at.date(),
    }
    return pa.Table.from_pylist([row], schema=ERASURES.schema)


TOMBSTONE_TIME_COLUMNS = ("received_at", "start_time", "started_at")
"""When a row came to be, per table (bronze, events, sessions): rows of an erased device from
before its erasure are dropped; later rows are new data and land. A table with none of these
columns drops every row of an erased device."""


class ErasedDevices:
    """The erased devices, as the audit table records them: a writer's tombstone list.

    A writer that stages rows before it commits them (the sidecar) drops the rows of erased
    devices that predate the erasure at commit time, so rows staged (or still in the segment
    the gateway was writing) before an erasure are not landed after it. The audit table is
    re-read only when its Delta version changed (one log lookup per call).
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._version: int | None = None
        self._erased: dict[str, datetime] = {}

    def erased(self) -> dict[str, datetime]:
        """Device SHA-256 → when its latest erasure completed (UTC)."""
        version = self.lake.version(ERASURES)
        if version is not None and version != self._version:
            rows = self.lake.read(ERASURES, columns=["device_sha256", "completed_at"])
            erased: dict[str, datetime] = {}
            for digest, at in zip(
                rows.column("device_sha256").to_pylist(),
                rows.column("completed_at").to_pylist(),
                strict=True,
            ):
                erased[digest] = max(at, erased.get(digest, at))
            self._erased, self._version = erased, version
        return self._erased

    def drop(self, table: pa.Table) -> pa.Table:
        """``table`` without erased devices' rows from before their erasure."""
        if table.num_rows == 0 or "device_id" not in table.column_names:
            return table
        erased = self.erased()
        if not erased:
            return table
        gone = {
            d: erased[device_hash(d)]
            for d in _key_values(table, "device_id")
            if device_hash(d) in erased
        }
        if not gone:
            return table
        devices = pc.cast(table.column("device_id"), pa.string())
        time_column = next((c for c in TOMBSTONE_TIME_COLUMNS if c in table.column_names), None)
        drop = pa.array([False] * table.num_rows)
        for device, at in gone.items():
            mine = pc.equal(devices, device)
            if time_column is not None:
                column = table.column(time_column)
                before = pc.less_equal(column, pa.scalar(at, column.type))
                mine = pc.and_(mine, pc.fill_null(before, True))  # no time: treat as before
            drop = pc.or_(drop, mine)
        kept = table.filter(pc.invert(drop))
        log.info("dropped %d rows of erased devices", table.num_rows - kept.num_rows)
        return kept
