"""Thin helpers over ``deltalake`` that every lake operation shares.

delta-rs does the real work (the transaction log, conflict checks, object-store commits);
this module only adds what the lake's contract needs on top: create-if-missing that is safe
when two processes race, commit properties that carry lineage and an app transaction,
primary-key merge predicates, a retry policy for commits that lost a race, and one for
operations that found the object store unavailable.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from lake_schemas.errors import VersionNotFound
from lake_schemas.lineage import commit_metadata
from lake_schemas.tables import CHECKPOINT_INTERVAL, TABLE_PROPERTIES, TableSpec

COMMIT_ATTEMPTS = 8
"""Attempts of one lake operation when its commit loses a race (CommitFailedError)."""
RETRY_WAIT_MAX_S = 2.0
"""Upper bound of the jittered back-off between attempts, in seconds."""
STORE_RETRY_WAIT_MAX_S = 5.0
"""Upper bound of the back-off while the object store is unavailable, in seconds."""

STORE_ERROR_MARK = "Generic S3 error"
"""How the object store (S3 and S3-compatible endpoints) opens its request errors."""

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_store_unavailable(exc: BaseException) -> bool:
    """True for an error of the object store itself (endpoint refused, reset or timed out
    after delta-rs' own request retries), which may pass once the store is back.

    delta-rs reports those as a bare ``OSError`` with no errno ("Generic S3 error …"), except
    when a data file's upload fails inside its Parquet writer: then a ``DeltaError`` wraps the
    object store's message. An ``OSError`` subclass or one carrying an errno is a local file
    error (missing folder, permission, full disk) that waiting does not cure.
    """
    if isinstance(exc, DeltaError):
        return STORE_ERROR_MARK in str(exc)
    return type(exc) is OSError and exc.errno is None


def with_store_retries(operation: Callable[[], T], give_up_after_s: float) -> T:
    """Run ``operation`` again, with jittered exponential back-off (0.2 s doubling up to
    5 s), while it fails because the object store is unavailable, for up to
    ``give_up_after_s`` seconds (0: once, no retry); then the last error is raised.

    Only for operations that are safe to repeat after a failure that may have been applied
    (the request reached the store but its answer did not come back): writes guarded by an
    app transaction, reads. A plain append repeated that way could land twice.
    """
    if give_up_after_s <= 0:
        return operation()
    retrying = retry(
        retry=retry_if_exception(is_store_unavailable),
        stop=stop_after_delay(give_up_after_s),
        wait=wait_random_exponential(multiplier=0.2, max=STORE_RETRY_WAIT_MAX_S),
        before_sleep=_log_store_retry,
        reraise=True,
    )
    return retrying(operation)()


def _log_store_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    first_line = str(error).splitlines()[0] if error is not None else ""
    log.warning(
        "object store unavailable (%s); attempt %d failed, retrying in %.1f s",
        first_line,
        state.attempt_number,
        state.next_action.sleep if state.next_action is not None else 0.0,
    )


def join_uri(root: str, path: str) -> str:
    """``root/path`` for a local folder or an object-store URI."""
    return f"{root.rstrip('/')}/{path.strip('/')}"


def is_remote(uri: str) -> bool:
    """True for object-store URIs (``s3://…``), False for local paths."""
    return "://" in uri and not uri.startswith("file://")


def open_table(
    uri: str, storage_options: dict[str, str] | None, version: int | None = None
) -> DeltaTable | None:
    """The Delta table at ``uri`` (latest or a given version), or None when there is none."""
    if not DeltaTable.is_deltatable(uri, storage_options=storage_options):
        return None
    return DeltaTable(uri, version=version, storage_options=storage_options)


def local_folder(uri: str) -> Path:
    """The folder of a local table's URI (``file://`` prefix and percent-escapes removed)."""
    return Path(unquote(uri.removeprefix("file://")))


def bring_forward(table: DeltaTable) -> None:
    """Load the commits made since ``table``'s snapshot, if any.

    ``update_incremental`` lists the whole ``_delta_log`` folder of a local table (the local
    object store has no listing from an offset), which grows by a file per commit. For a local
    table a stat of the next commit file answers "anything new?" in O(1); only then is the log
    read. Object stores list from an offset, so there it is called as is.
    """
    uri = table.table_uri
    if not is_remote(uri):
        folder = local_folder(uri)
        if not (folder / "_delta_log" / f"{table.version() + 1:020d}.json").exists():
            return
    table.update_incremental()


def small_file_bytes(target_bytes: int) -> int:
    """Files below this (half the compaction target) are the ones worth counting toward a
    compaction: any two of them merge into one file of at most the target, while files just
    under the target (optimize never fills one exactly) can never merge and, counted, would
    trigger a compaction on every commit."""
    return max(1, target_bytes // 2)


def small_files(table: DeltaTable, target_bytes: int) -> pa.Table:
    """The add actions (flattened: ``path``, ``size_bytes``, ``partition.<column>`` …) of the
    table's files under :func:`small_file_bytes` of ``target_bytes``."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return actions.filter(pc.less(actions.column("size_bytes"), small_file_bytes(target_bytes)))


class OpenTables:
    """The latest snapshot of each table, kept open and brought forward with
    ``update_incremental`` (which reads only the commits since), so a writer's cost per commit
    does not grow with the table's history: opening a table from scratch replays its last
    checkpoint plus every commit after it (up to ``CHECKPOINT_INTERVAL``).

    Only for latest snapshots: never move one back in time (``load_as_version``).
    """

    def __init__(self, storage_options: dict[str, str] | None) -> None:
        self.storage_options = storage_options
        self._tables: dict[str, DeltaTable] = {}

    def latest(self, uri: str) -> DeltaTable | None:
        table = self._tables.get(uri)
        if table is not None:
            try:
                bring_forward(table)
                return table
            except (DeltaError, OSError):  # replaced or removed under us: open it again
                del self._tables[uri]
        table = open_table(uri, self.storage_options)
        if table is not None:
            self._tables[uri] = table
        return table


_LOG_ENTRY = re.compile(r"^(\d{20})\.")
"""A versioned entry of ``_delta_log``: ``<version>.json``, ``<version>.checkpoint.parquet``…"""


def trim_local_log(uri: str, head: int, keep_commits: int) -> int:
    """Remove a local table's log entries older than its newest checkpoint that is at least
    ``keep_commits`` versions behind ``head``; returns how many files went.

    Delta's own cleanup (``delta.logRetentionDuration``) keeps commit files for a time, which
    bounds nothing in commits: delta-rs lists and stats a local table's whole ``_delta_log``
    on every commit (~10 ms per 1,000 entries here), so a table committed to every second
    would pay for every commit of the last week on each new one. This keeps the bound in
    commits, with the rule Delta's cleanup follows: only entries before a checkpoint go, so
    a reader of any kept version still finds its checkpoint and the commits after it, and a
    reader of the latest snapshot never needs what was removed. Entries of other shapes
    (``_last_checkpoint``, temporary files) are left alone. Object stores list from an
    offset, so they keep Delta's time retention alone (not called for them).
    """
    if keep_commits <= 0:
        return 0
    folder = local_folder(uri) / "_delta_log"
    try:
        entries = [
            (int(match.group(1)), entry.path)
            for entry in os.scandir(folder)
            if (match := _LOG_ENTRY.match(entry.name))
        ]
    except FileNotFoundError:
        return 0
    checkpoints = [
        version
        for version, path in entries
        if path.endswith(f"{version:020d}.checkpoint.parquet") and version <= head - keep_commits
    ]
    if not checkpoints:
        return 0
    keep_from = max(checkpoints)
    removed = 0
    for version, path in entries:
        if version < keep_from:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass  # another process trimmed it first
    return removed


class LogTrimmer:
    """Runs :func:`trim_local_log` after a writer's commits, once per checkpoint interval of
    each table (a scan of a folder that holds at most ``keep_commits`` + one interval of
    entries: ~1 ms every 100 commits)."""

    def __init__(self, keep_commits: int) -> None:
        self.keep_commits = keep_commits
        self._checked: dict[str, int] = {}
        """Table URI → the checkpoint interval (version // interval) last trimmed in."""

    def after_commit(self, table: DeltaTable) -> int:
        uri = table.table_uri
        if self.keep_commits <= 0 or is_remote(uri):
            return 0
        head = table.version()
        interval = head // CHECKPOINT_INTERVAL
        if self._checked.get(uri) == interval:
            return 0
        self._checked[uri] = interval
        try:
            return trim_local_log(uri, head, self.keep_commits)
        except OSError:  # the commit stands; the next interval tries again
            log.warning("could not trim the log of %s", uri, exc_info=True)
            return 0


def travel_to_time(name: str, table: DeltaTable, when: datetime) -> DeltaTable:
    """Move the latest snapshot ``table`` to the version current at ``when``.

    delta-rs answers a time older than the oldest commit its log still holds with that
    oldest commit, so a table whose older entries were removed (log retention, a trimmed
    local log) would silently read as it was later. That is an error here, naming the oldest
    time that can be asked for. A time before the table's first commit (version 0, which
    the lake creates empty) reads as version 0, as before.
    """
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    kept = {
        int(commit["version"]): int(commit["timestamp"])
        for commit in table.history()
        if "version" in commit and "timestamp" in commit
    }
    table.load_as_version(when)
    oldest = min(kept, default=0)
    if oldest > 0 and table.version() == oldest and kept[oldest] > when.timestamp() * 1000:
        since = datetime.fromtimestamp(kept[oldest] / 1000, tz=UTC).isoformat()
        raise VersionNotFound(
            f"{name} has no version as of {when.isoformat()}: its log is kept from version "
            f"{oldest} ({since}) on; ask for a later time"
        )
    return table


def load_version(name: str, table: DeltaTable, version: int) -> DeltaTable:
    """Move the latest snapshot ``table`` back to ``version``, or say which versions exist.

    delta-kernel's own message for a version past the end ("LogSegment end version 1 not the
    same as the specified end version 3") names neither the table nor what to ask for instead.
    """
    newest = table.version()
    reason = ""
    # Read before moving: a failed load leaves the snapshot unusable.
    commits = [int(commit["version"]) for commit in table.history() if "version" in commit]
    if 0 <= version <= newest:
        try:
            table.load_as_version(int(version))
            return table
        except (DeltaError, OSError, ValueError) as exc:  # its log entry is gone (retention)
            reason = f": {exc}"
    oldest = min(commits, default=newest)
    raise VersionNotFound(
        f"{name} has no version {version}; it has versions {oldest}–{newest}"
        f" (time travel reaches as far back as its log retention){reason}"
    )


def create_if_missing(
    uri: str, storage_options: dict[str, str] | None, spec: TableSpec, writer: str
) -> DeltaTable:
    """Open the table, creating it (version 0, empty) with this schema when it does not exist.

    Two processes may race to create the same table; the loser's commit of version 0 fails
    (a put-if-absent on the first log entry, with no retry at a later version), and it then
    opens the winner's table.
    """
    table = open_table(uri, storage_options)
    if table is not None:
        return table
    try:
        return DeltaTable.create(
            uri,
            spec.schema,
            mode="ignore",
            partition_by=list(spec.partition_by) or None,
            name=spec.name,
            description=spec.description,
            configuration=TABLE_PROPERTIES,
            storage_options=storage_options,
            # No rebase: a CREATE that lost the race must fail, not land as version 1 on top of
            # the winner's table (delta-rs would otherwise retry it at the next version).
            commit_properties=CommitProperties(
                custom_metadata=commit_metadata(writer), max_commit_retries=0
            ),
        )
    except (CommitFailedError, DeltaError):
        table = open_table(uri, storage_options)
        if table is None:
            raise
        return table


def commit_properties(
    writer: str, app_id: str | None = None, app_version: int | None = None
) -> CommitProperties:
    """Lineage in the commit metadata, plus the app transaction when one is given."""
    transactions = None
    if app_id is not None and app_version is not None:
        transactions = [Transaction(app_id, app_version)]
    return CommitProperties(
        custom_metadata=commit_metadata(writer, app_id, app_version),
        app_transactions=transactions,
    )


def with_commit_retries(operation: Callable[[], T]) -> T:
    """Run ``operation`` again (from a fresh snapshot) when its commit lost a race.

    delta-rs already rebases commits that do not conflict (two appends); what reaches us is
    a real conflict (e.g. two merges rewrote the same file), so the whole operation, including
    our own app-transaction check, runs again on the new snapshot.
    """
    retrying = retry(
        retry=retry_if_exception_type(CommitFailedError),
        stop=stop_after_attempt(COMMIT_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.05, max=RETRY_WAIT_MAX_S),
        reraise=True,
    )
    return retrying(operation)()


def key_predicate(primary_key: Sequence[str], nullable: Sequence[str] = ()) -> str:
    """Merge predicate joining target ``t`` and source ``s`` on the primary key.

    Nullable key columns use ``IS NOT DISTINCT FROM`` so that a NULL part of a key matches
    itself and does not insert a duplicate.
    """
    parts = []
    for column in primary_key:
        quoted = f'"{column}"'
        op = "IS NOT DISTINCT FROM" if column in nullable else "="
        parts.append(f"t.{quoted} {op} s.{quoted}")
    return " AND ".join(parts)


def partition_predicate(partition_by: Sequence[str], values: Sequence[str]) -> str:
    """Merge predicate keeping the target ``t`` to these values of its one partition column
    (delta-rs prunes the files of every other partition before it joins)."""
    if len(partition_by) != 1:
        raise ValueError(f"needs exactly one partition column, not {list(partition_by)}")
    if not values:
        return "FALSE"
    quoted = ", ".join("'" + str(value).replace("'", "''") + "'" for value in values)
    return f't."{partition_by[0]}" IN ({quoted})'


def dedupe_on_key(data: pa.Table, primary_key: Sequence[str], keep: str = "first") -> pa.Table:
    """Keep one row per primary key (the first or the last one in batch order)."""
    if data.num_rows < 2 or not primary_key:
        return data
    index_name = "__row_index"
    indexed = data.append_column(index_name, pa.array(range(data.num_rows), pa.int64()))
    aggregate = "min" if keep == "first" else "max"
    grouped = indexed.group_by(list(primary_key), use_threads=False).aggregate(
        [(index_name, aggregate)]
    )
    if grouped.num_rows == data.num_rows:
        return data
    keep_rows = pc.sort_indices(grouped.column(f"{index_name}_{aggregate}"))
    rows = pc.take(grouped.column(f"{index_name}_{aggregate}"), keep_rows)
    return data.take(rows)
