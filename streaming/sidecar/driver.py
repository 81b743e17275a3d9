"""The local sidecar driver: sealed spool segments → lake, in exactly-once micro-batches.

One cycle (:meth:`Sidecar.land_once`):

1. **plan** — take the sealed segments (oldest first) and durably record
   ``batch N = these segments`` in a manifest (write, fsync, atomic rename, fsync the folder).
   N is one more than both the last manifest and every table's committed app transaction, so
   a lost state folder can never reuse a number the lake has already seen.
2. **pipeline** — run :class:`~streaming.sidecar.pipeline.LandSpool` as a bounded pipeline on the
   in-process runner (or a Dask cluster: ``SidecarConfig.dask_scheduler``) over those segments
   plus the previous batch's carry; stage every output as an Arrow file and then a ``_DONE``
   marker (in process the bronze rows stay in memory: :mod:`streaming.sidecar.staging`).
3. **commit** — each table gets one commit tagged with the app transaction ``(app_id, N)``;
   a table whose ``transaction_version(app_id)`` is already ≥ N is skipped.
4. **retire** — mark the batch landed, retire its segments (or quarantine unreadable ones)
   and drop what the next batch no longer needs.

While batch N commits, batch N+1 is planned (from the segments N does not hold) and its
pipeline runs on a second thread (``SidecarConfig.pipeline_ahead``): it needs only N's staged
carry, and it is committed by the next cycle, after N. So at most two manifests are unlanded,
and a restart lands the older first.

Why it is exactly once: the input of batch N is fixed before anything runs (the manifest, with
its segments, batch time and landing parameters, and the previous carry), the staged outputs
are reused once complete — or made again from that input by the same deterministic landing,
when the audio was held by a process that is gone — and every commit is skipped if the table
already holds N. A crash at any point leaves either an unfinished manifest — the next start
replays it — or a landed one; nothing is ever landed under two batch numbers, and a
table never takes batch N twice. See docs/sidecar.md for the full argument.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas import (
    AUDIO_CHUNKS,
    AUDIO_EVENTS,
    DEAD_LETTERS,
    PREDICTIONS,
    SESSIONS,
    Lake,
    TableSpec,
)
from lake_schemas.delta import with_store_retries
from lake_schemas.erasure import ErasedDevices
from streaming.sidecar.landing import LandingParams
from streaming.sidecar.options import ClusterUnavailable
from streaming.sidecar.session_rows import merge_session_rows, partitions_holding
from streaming.sidecar.staging import read_parts, release_held
from streaming.spool import (
    Segment,
    fsync_dir,
    purge_landed,
    quarantine_segment,
    recover_abandoned,
    retire_segment,
    sealed_segments,
)
from streaming.spool.erasure import erasure_lock

log = logging.getLogger(__name__)

DONE_MARKER = "_DONE"
LANDED_SUFFIX = ".landed"
STAGED_TABLES: tuple[tuple[str, TableSpec], ...] = (
    ("dead_letters", DEAD_LETTERS),
    ("bronze", AUDIO_CHUNKS),
    ("events", AUDIO_EVENTS),
    ("predictions", PREDICTIONS),
)
"""Staged output → table; bronze commits on a thread of its own, the others in this order,
then silver.sessions (it merges)."""
UNREADABLE_PREFIX = "unreadable segment"

PhaseHook = Callable[[str, int], None]
"""Called at each phase boundary with (phase, batch): logging, metrics, fault injection."""


@dataclass(frozen=True)
class SidecarConfig:
    """Where the driver works and how big a batch may grow."""

    spool_dir: Path
    state_dir: Path
    """The driver's own folder: manifests, staged outputs, carries."""
    app_id: str = "sidecar"
    writer: str = "sidecar"
    retention_s: float = 3600.0
    """Landed segments stay in ``<spool>/landed`` this long (0: delete at once)."""
    max_segments_per_batch: int = 256
    max_batch_bytes: int = 256 * 1024 * 1024
    """Most spool bytes (segment file sizes) one batch takes; at least one segment always.

    A batch takes every sealed segment waiting, oldest first, up to this and
    ``max_segments_per_batch``: batches grow with the backlog (as Spark's
    ``maxFilesPerTrigger`` caps a micro-batch), so a fixed cost per batch (starting the Beam
    pipeline, the commits) is shared by more chunks exactly when the sidecar is behind. The
    cap bounds the batch's memory: about 3× this while it lands (the records, the bronze rows,
    their Parquet encoding)."""
    params: LandingParams = field(default_factory=LandingParams)
    dask_scheduler: str | None = None
    """``tcp://HOST:PORT``: run each batch's pipeline on this Dask cluster (None: in process)."""
    dask_partitions: int = 4
    """On Dask: partitions of a batch's segments and session shards (≥ the worker count)."""
    dask_connect_timeout_s: int = 10
    """On Dask: how long a batch waits for the scheduler and a first worker (s)."""
    pipeline_ahead: bool = True
    """Run the next batch's pipeline while this batch commits (on the second core): a batch's
    commits (delta-rs' Parquet writes, the catalog) and the next one's landing pipeline use
    different resources, and the next batch needs only this one's staged carry. Costs the
    memory of two batches at once; off on a single core."""
    store_retry_s: float = 300.0
    """How long a batch keeps being retried while the lake's object store is unavailable
    (s; 0: fail at once). Each retry replays the batch from its manifest, as a restart would."""


@dataclass
class BatchReport:
    """What one batch did."""

    batch: int
    segments: int
    replayed: bool
    reused_staged: bool
    committed_rows: dict[str, int] = field(default_factory=dict)
    skipped_tables: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def _batch_of(waiting: list[Segment], max_segments: int, max_bytes: int) -> list[Segment]:
    """The oldest waiting segments within both caps (at least one, when any wait)."""
    sizes = np.cumsum([s.size_bytes for s in waiting[:max_segments]])
    return (
        waiting[: max(1, int(np.searchsorted(sizes, max_bytes, side="right")))] if waiting else []
    )


class Sidecar:
    """Lands the spool into the lake; see the module docstring for the protocol."""

    def __init__(
        self,
        lake: Lake,
        config: SidecarConfig,
        *,
        on_phase: PhaseHook | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.lake = lake
        self.config = config
        self.on_phase = on_phase or (lambda phase, batch: None)
        self.on_batch = on_batch or (lambda report: None)
        """Called with each landed batch's report (metrics)."""
        self.batches_dir = config.state_dir / "batches"
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        self.erased = ErasedDevices(lake)
        """Tombstones: rows of devices erased after they were staged never land."""
        self._staged_here: set[int] = set()
        """Batches whose pipeline this process ran (landing them later is no replay)."""
        self._retired: set[int] = set()
        """Batches this process retired (a cycle finishes a cut-off retire only once)."""

    # ---------------------------------------------------------------------- bookkeeping
    def _manifest_path(self, batch: int) -> Path:
        return self.batches_dir / f"{batch:012d}.json"

    def _staging(self, batch: int) -> Path:
        return self.batches_dir / f"{batch:012d}"

    def _landed_marker(self, batch: int) -> Path:
        return self.batches_dir / f"{batch:012d}{LANDED_SUFFIX}"

    def _manifests(self) -> list[int]:
        return sorted(int(p.stem) for p in self.batches_dir.glob("*.json") if p.stem.isdigit())

    def _load_manifest(self, batch: int) -> dict[str, Any]:
        return json.loads(self._manifest_path(batch).read_text())

    def _committed_max(self) -> int:
        versions = [
            self.lake.transaction_version(spec, self.config.app_id)
            for spec in (AUDIO_CHUNKS, DEAD_LETTERS, AUDIO_EVENTS, PREDICTIONS, SESSIONS)
        ]
        return max((v for v in versions if v is not None), default=0)

    # ---------------------------------------------------------------------- the cycle
    def land_once(self) -> BatchReport | None:
        """Finish an interrupted batch, or land the sealed segments as a new one.

        Returns None when there was nothing to do. Holds the spool's erasure lock throughout,
        so a batch never interleaves with an erasure (see :mod:`streaming.spool.erasure`).
        """
        with erasure_lock(self.config.spool_dir):
            return self._land_once()

    def _land_once(self) -> BatchReport | None:
        batches = self._manifests()
        unlanded = [b for b in batches if not self._landed_marker(b).exists()]
        landed = [b for b in batches if not unlanded or b < unlanded[0]]
        if landed and landed[-1] not in self._retired:
            self._retire(self._load_manifest(landed[-1]))  # idempotent: finishes a cut-off one
        if unlanded:  # at most two: a batch and the one staged ahead of it
            first = unlanded[0]
            return self._run_batch(
                self._load_manifest(first), replayed=first not in self._staged_here
            )
        manifest = self._plan(batches[-1] if batches else None)
        if manifest is None:
            return None
        return self._run_batch(manifest, replayed=False)

    def land_next(self) -> BatchReport | None:
        """:meth:`land_once`, run again while the lake's object store is unavailable (an
        endpoint refusing, resetting or timing out), for up to ``config.store_retry_s``.

        Each try is exactly what a restart would do: an unfinished batch is replayed from its
        manifest and staged outputs, and a table that already holds the batch's app
        transaction is skipped, so a commit whose answer was lost is never made twice.
        """
        return with_store_retries(self.land_once, self.config.store_retry_s)

    def run(self, interval_s: float, stop: threading.Event) -> int:
        """Land batches until ``stop`` is set; returns how many batches were landed."""
        landed = 0
        while not stop.is_set():
            try:
                report = self.land_next()
            except ClusterUnavailable as exc:  # nothing committed: the batch simply reruns
                log.warning("batch not landed (%s); retrying in %.1f s", exc, interval_s)
                stop.wait(interval_s)
                continue
            if report is not None:
                landed += 1
                continue  # more sealed segments may be waiting
            purge_landed(self.config.spool_dir, self.config.retention_s)
            stop.wait(interval_s)
        return landed

    def _plan(
        self, previous: int | None, taken: frozenset[str] = frozenset()
    ) -> dict[str, Any] | None:
        """Record the next batch: the sealed segments waiting, except those ``taken`` by a
        batch planned but not landed yet (whose segments are only retired once it lands)."""
        for segment in recover_abandoned(self.config.spool_dir):
            log.warning("sealed %s, left open by a writer that is gone", segment.path)
        segments = _batch_of(
            [s for s in sealed_segments(self.config.spool_dir) if s.name not in taken],
            self.config.max_segments_per_batch,
            self.config.max_batch_bytes,
        )
        if not segments:
            return None
        batch = max(previous or 0, self._committed_max()) + 1
        self.on_phase("planned", batch)
        manifest = {
            "batch": batch,
            "segments": [s.name for s in segments],
            "carry_from": previous,
            "batch_time": datetime.now(UTC).isoformat(),
            "params": asdict(self.config.params),
        }
        _write_json_atomic(self._manifest_path(batch), manifest)
        self.on_phase("recorded", batch)
        return manifest

    def _run_batch(self, manifest: dict[str, Any], *, replayed: bool) -> BatchReport:
        started = time.perf_counter()
        batch = int(manifest["batch"])
        staging = self._staging(batch)
        done = staging / DONE_MARKER
        if done.exists() and not self._staged_outputs_intact(batch, done):
            log.info("batch %d: its audio was held by a process that is gone; restaging", batch)
            done.unlink()
        reused = done.exists() and batch not in self._staged_here
        if not done.exists():
            self._stage(manifest)
        report = BatchReport(
            batch,
            len(manifest["segments"]),
            replayed=replayed,
            reused_staged=reused,
            counters=json.loads(done.read_text()).get("counters", {}),
        )
        ahead = self._ahead_of(manifest) if self.config.pipeline_ahead else None
        # Leaving the pool's block waits for the pipeline ahead, even behind a failed commit.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidecar-ahead") as pool:
            staging_ahead = None if ahead is None else pool.submit(self._stage, ahead)
            with self.lake.batch():  # one catalog commit; SQL sees the tables change together
                self._commit(batch, staging, report, datetime.fromisoformat(manifest["batch_time"]))
        self._landed_marker(batch).touch()
        fsync_dir(self.batches_dir)
        self.on_phase("landed", batch)
        report.quarantined = self._retire(manifest)
        self._retired.add(batch)
        self.on_phase("retired", batch)
        report.seconds = time.perf_counter() - started
        self.on_batch(report)
        log.info(
            "batch %d landed: %d segments, rows %s, skipped %s, %.2f s",
            batch,
            report.segments,
            report.committed_rows,
            report.skipped_tables,
            report.seconds,
        )
        if staging_ahead is not None:
            staging_ahead.result()  # a failure ahead is a batch cut off: the next cycle reruns it
        return report

    def _staged_outputs_intact(self, batch: int, done: Path) -> bool:
        """Whether a staged batch's outputs are all there: every part filed, or the audio held
        by this process, or held elsewhere but already committed (nothing needs it)."""
        if batch in self._staged_here or not json.loads(done.read_text()).get("audio_held"):
            return True
        committed = self.lake.transaction_version(AUDIO_CHUNKS, self.config.app_id)
        return committed is not None and committed >= batch

    def _ahead_of(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The batch after a staged one, to stage while it commits: the manifest already
        recorded after it (a replay), else a new plan over the segments it does not hold;
        None when that batch is staged already or nothing is waiting."""
        batch = int(manifest["batch"])
        later = [b for b in self._manifests() if b > batch]
        if later:
            recorded = self._load_manifest(later[0])
            return None if (self._staging(later[0]) / DONE_MARKER).exists() else recorded
        return self._plan(batch, taken=frozenset(manifest["segments"]))

    def _stage(self, manifest: dict[str, Any]) -> None:
        """Run a batch's pipeline and mark its outputs complete (``_DONE``)."""
        batch = int(manifest["batch"])
        staging = self._staging(batch)
        self.on_phase("pipeline", batch)
        held = self.config.dask_scheduler is None  # a cluster's workers file every part
        counters = self._run_pipeline(manifest, staging, hold_audio=held)
        _write_json_atomic(staging / DONE_MARKER, {"counters": counters, "audio_held": held})
        self._staged_here.add(batch)
        self.on_phase("staged", batch)

    def _run_pipeline(
        self, manifest: dict[str, Any], staging: Path, *, hold_audio: bool
    ) -> dict[str, int]:
        import apache_beam as beam  # lazy: a replay from staged outputs never needs Beam

        from streaming.sidecar.options import dask_options, local_options
        from streaming.sidecar.pipeline import (
            METRICS_NAMESPACE,
            LandSpool,
            ReadSegmentFiles,
            StageOutputs,
        )

        release_held(staging)
        if staging.exists():
            shutil.rmtree(staging)  # a half-written attempt: start it over
        staging.mkdir(parents=True)
        remote = self.config.dask_scheduler
        # On a cluster a task still running from an abandoned attempt could write late: each
        # attempt stages into its own folder, promoted only once the pipeline has finished.
        target = staging / f"attempt-{uuid.uuid4().hex}" if remote else staging
        target.mkdir(exist_ok=True)
        previous = manifest.get("carry_from")
        carry_folder = None if previous is None else str(self._staging(int(previous)))
        paths = [self.config.spool_dir / name for name in manifest["segments"]]
        options = (
            dask_options(
                remote,
                partitions=self.config.dask_partitions,
                connect_timeout_s=self.config.dask_connect_timeout_s,
            )
            if remote
            else local_options()
        )
        pipeline = beam.Pipeline(options=options)
        outputs = (
            pipeline
            | "Segments" >> ReadSegmentFiles(paths)
            | "Land"
            >> LandSpool(
                batch_time=datetime.fromisoformat(manifest["batch_time"]),
                params=LandingParams(**manifest["params"])
                if "params" in manifest  # older manifests did not record them
                else self.config.params,
                carry_folder=carry_folder,
            )
        )
        outputs | "Stage" >> StageOutputs(target, hold_audio=hold_audio)
        # In process, skip Beam's runner-API round trip of the graph (a serialisation check
        # that costs about a third of a small batch's pipeline time and changes nothing).
        result = pipeline.run(test_runner_api="AUTO" if remote else False)
        result.wait_until_finish()
        counters: dict[str, int] = {}
        for counter in result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE)
        )["counters"]:
            counters[counter.key.metric.name] = int(counter.committed or counter.attempted or 0)
        if target != staging:
            for file in target.iterdir():
                file.replace(staging / file.name)
            target.rmdir()
        for file in staging.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(staging)
        return counters

    # ---------------------------------------------------------------------- commits
    def _commit(self, batch: int, staging: Path, report: BatchReport, batch_time: datetime) -> None:
        """Each table's commit of the batch, the audio's on a second thread.

        Bronze holds the batch's audio and takes most of the commit time, in delta-rs'
        Parquet writer, which runs without the GIL; the smaller tables commit meanwhile.
        Nothing orders the tables' commits: each carries the batch's app transaction, so a
        replay skips exactly the tables that already hold it, whichever those are.
        """
        # Leaving the pool's block waits for the audio's commit, even behind a failure here.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidecar-bronze") as pool:
            audio = pool.submit(self._commit_staged, batch, staging, report, "bronze", AUDIO_CHUNKS)
            for name, spec in STAGED_TABLES:
                if spec is not AUDIO_CHUNKS:
                    self._commit_staged(batch, staging, report, name, spec)
            self._commit_sessions(batch, staging, report, batch_time)
        audio.result()

    def _commit_staged(
        self, batch: int, staging: Path, report: BatchReport, name: str, spec: TableSpec
    ) -> None:
        table = self.erased.drop(read_parts(staging, name, spec.schema))
        if table.num_rows == 0:
            return
        writer, app_id = self.config.writer, self.config.app_id
        result = self.lake.append(spec, table, writer=writer, app_id=app_id, app_version=batch)
        self._record(report, spec, result.skipped, result.rows)
        self.on_phase(f"committed:{spec.name}", batch)

    def _commit_sessions(
        self, batch: int, staging: Path, report: BatchReport, batch_time: datetime
    ) -> None:
        writer, app_id = self.config.writer, self.config.app_id
        deltas = self.erased.drop(read_parts(staging, "sessions", None))
        if deltas.num_rows:
            done = self.lake.transaction_version(SESSIONS, app_id)
            if done is not None and done >= batch:
                self._record(report, SESSIONS, True, 0)
            else:
                ids = sorted(set(deltas.column("session_id").to_pylist()))
                dates = partitions_holding(ids, batch_time)  # None: the whole table
                partitions = None if dates is None else [("session_date", "in", dates)]
                # The ids filtered in memory: pushing ``isin`` down into delta-rs' string_view
                # statistics fails in pyarrow, and the table holds one small row per session.
                current = self.lake.read(SESSIONS, filter=partitions)
                existing = current.filter(
                    pc.is_in(pc.cast(current.column("session_id"), pa.string()), pa.array(ids))
                )
                merged = merge_session_rows(existing, deltas, batch_time)
                result = self.lake.upsert(
                    SESSIONS,
                    merged,
                    writer=writer,
                    app_id=app_id,
                    app_version=batch,
                    within=None if dates is None else [d.isoformat() for d in dates],
                )
                self._record(report, SESSIONS, result.skipped, result.rows)
            self.on_phase(f"committed:{SESSIONS.name}", batch)

    @staticmethod
    def _record(report: BatchReport, spec: TableSpec, skipped: bool, rows: int) -> None:
        if skipped:
            report.skipped_tables.append(spec.name)
        else:
            report.committed_rows[spec.name] = rows

    # ---------------------------------------------------------------------- retirement
    def _retire(self, manifest: dict[str, Any]) -> list[str]:
        """Retire a landed batch's segments; quarantine the unreadable; tidy the state folder."""
        batch = int(manifest["batch"])
        staging = self._staging(batch)
        unreadable: set[str] = set()
        if staging.exists():
            dead = read_parts(staging, "dead_letters", DEAD_LETTERS.schema)
            for source, reason in zip(
                dead.column("source").to_pylist(), dead.column("reason").to_pylist(), strict=True
            ):
                if reason.startswith(UNREADABLE_PREFIX):
                    unreadable.add(source)
        spool = self.config.spool_dir
        for name in manifest["segments"]:
            # a dead letter names the file; the manifest its path in the spool (worker-K/…)
            if name in unreadable or Path(name).name in unreadable:
                quarantine_segment(spool / name)
            else:
                retire_segment(spool / name, retention_s=self.config.retention_s)
        # Batch N+1 needs only N's carry; everything older (and N's staged rows) can go.
        for older in self._manifests():
            if older < batch:
                release_held(self._staging(older))
                shutil.rmtree(self._staging(older), ignore_errors=True)
                self._manifest_path(older).unlink(missing_ok=True)
                self._landed_marker(older).unlink(missing_ok=True)
        release_held(staging)
        if staging.exists():
            for file in staging.iterdir():
                if not file.name.startswith("carry_") and file.name != DONE_MARKER:
                    file.unlink(missing_ok=True)
        return sorted(unreadable)
