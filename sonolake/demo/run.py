"""The demo's stages, in order, with progress on the terminal.

1. start the sidecar and the gateway (child processes, free port);
2. replay the training recordings as many devices at once, with ground-truth labels;
3. wait until the sidecar has landed every acknowledged chunk;
4. materialize features → training set → candidate → evaluation → gate → champion;
5. replay held-out speakers at real-time pace: the gateway serves the new champion;
6. drift report on those events (same corpus: expected calm), sensor tick;
7. replay telephone digits (8 kHz mu-law), drift report (expected drift), sensor tick → the
   retraining run it requests, executed: its gate asks for live evidence;
8. the held-out speakers replayed again: the retrained version (the ``challenger``)
   shadow-scores every segment the champion answers; the live comparison, then the same gate
   with that evidence;
9. dbt build, quality checks, dbt docs; summary to the terminal and ``demo-summary.json``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features import SUMMARY_COLUMNS
from features.corpus import read_manifest
from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, DRIFT_REPORTS, SESSIONS
from models.promotion import PromotionGate
from models.registry import CHAMPION
from orchestration import (
    CANDIDATE_MODEL,
    LIVE_MODEL_COMPARISON,
    MODEL_EVALUATION,
    OBSERVE_JOB,
    RETRAIN_JOB,
    TRAINING_SET,
    TRIGGER_TAG,
    analytics_database,
    generate_dbt_docs,
    prepare_dagster_home,
    prepare_dbt_project,
    table_key,
)
from sonolake import wiring
from sonolake.demo.corpora import DemoCorpora, demo_corpora
from sonolake.demo.graph import DemoGraph, cancel_unfinished_runs, candidate_config, metadata
from sonolake.demo.options import DemoOptions
from sonolake.demo.processes import (
    Child,
    Children,
    free_port,
    get_json,
    sonolake_command,
    wait_until_listening,
)
from sonolake.demo.summary import DemoSummary
from sonolake.errors import BadInput, WorkFailed
from sonolake.settings import PROJECT_ROOT, Settings
from streaming.replay import ReplayReport, replay
from streaming.spool import sealed_segments

SUMMARY_FILE = "demo-summary.json"
MARKER_FILE = ".created-by-sonolake-demo"
LANDING_TIMEOUT_S = 600.0
MODEL_PICKUP_TIMEOUT_S = 60.0
SERVING_POLL_INTERVAL_S = 2.0
"""The demo's servers check the champion alias every 2 s (default 10 s) so hot-swaps show fast."""
SHADOW_LANDING_TRIES = 5
DEMO_SHADOW_WINDOWS_PER_S = 100.0
"""The demo gateway's shadow budget (default 20/s): one ~1 ms CPU window per final result."""


def prepare_locations(settings: Settings, reset: bool) -> None:
    """Start from empty: wipe the lake and state a previous demo made; refuse anything else."""
    lake = Path(settings.lake_root) if not settings.is_remote_lake else None
    state = settings.state_path
    ours = (state / MARKER_FILE).exists()
    busy = (lake is not None and lake.exists() and any(lake.iterdir())) or (
        state.exists() and any(p.name != "dagster" for p in state.iterdir())
    )
    if busy and not (ours or reset):
        raise BadInput(
            f"{lake or settings.lake_uri} or {state} already holds data the demo did not make; "
            "run `sonolake demo --reset` to wipe them, or point SONOLAKE_LAKE_URI and "
            "SONOLAKE_STATE_DIR somewhere empty"
        )
    if settings.is_remote_lake:
        raise BadInput(
            "the demo runs on a local lake; unset SONOLAKE_LAKE_URI / SONOLAKE_ENVIRONMENT"
        )
    for path in (lake, state):
        if path is not None and path.exists():
            shutil.rmtree(path)
    state.mkdir(parents=True, exist_ok=True)
    (state / MARKER_FILE).write_text("sonolake demo\n")


def child_env(settings: Settings, port: int) -> dict[str, str]:
    """The children's settings: the demo's locations, absolute, and fast alias polling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLAKE_")}
    env |= {
        "SONOLAKE_STATE_DIR": str(settings.state_path),
        "SONOLAKE_LAKE_URI": settings.lake_root,
        "SONOLAKE_MLFLOW_URI": settings.mlflow_tracking_uri,
        "SONOLAKE_DATA_DIR": str(settings.data_dir),
        "SONOLAKE_GATEWAY_HOST": "127.0.0.1",
        "SONOLAKE_GATEWAY_PORT": str(port),
        "SONOLAKE_SERVING_POLL_INTERVAL_S": str(SERVING_POLL_INTERVAL_S),
        "SONOLAKE_SIDECAR_INTERVAL_S": "1",
        # the shadow replay runs at 4x real time: room to shadow-score every final it makes
        "SONOLAKE_GATEWAY_SHADOW_WINDOWS_PER_S": str(DEMO_SHADOW_WINDOWS_PER_S),
        "PYTHONUNBUFFERED": "1",
    }
    return env


class Demo:
    """One run of the demo: settings, console, children, graph, summary."""

    def __init__(self, settings: Settings, options: DemoOptions, console: Console) -> None:
        self.settings = settings
        self.options = options
        self.console = console
        self.summary = DemoSummary()
        self.port = free_port()
        self.env = child_env(settings, self.port)
        self.logs = settings.state_path / "demo-logs"
        self.lake = wiring.lake(settings)
        self.registry = wiring.registry(settings, self.lake)
        self.url = f"ws://127.0.0.1:{self.port}/v1/listen"
        self.children: Children | None = None
        self.sidecar: Child | None = None
        self.gateway: Child | None = None

    # ----------------------------------------------------------------------------- helpers
    @contextmanager
    def stage(self, name: str, title: str) -> Iterator[None]:
        self.console.rule(f"[bold]{title}")
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = round(time.perf_counter() - started, 1)
            self.summary.stage_seconds[name] = seconds
            self.console.print(f"[dim]{name}: {seconds} s[/]")

    def say(self, text: str) -> None:
        self.console.print(f"  {text}")

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )

    def _count(self, spec: Any) -> int:
        return (
            self.lake.read(spec, columns=[spec.primary_key[0]]).num_rows
            if self.lake.exists(spec)
            else 0
        )

    # ----------------------------------------------------------------------------- servers
    def start_servers(self, children: Children) -> None:
        self.children = children
        self.start_sidecar()
        self.gateway = children.start(
            Child(
                "gateway",
                sonolake_command("gateway", "--port", str(self.port)),
                self.env,
                self.logs / "gateway.log",
            )
        )
        wait_until_listening(self.gateway, self.port, timeout_s=120)
        health = get_json(f"http://127.0.0.1:{self.port}/healthz")
        self.say(
            f"gateway pid {self.gateway.pid} on {self.url} "
            f"(model loaded: {health.get('model_loaded')})"
        )

    def start_sidecar(self) -> None:
        assert self.children is not None
        self.sidecar = self.children.start(
            Child(
                "sidecar",
                sonolake_command("sidecar", "--interval", "1"),
                self.env,
                self.logs / "sidecar.log",
            )
        )
        self.say(
            f"sidecar pid {self.sidecar.pid} landing {self.settings.spool_path} "
            f"into {self.settings.lake_root}"
        )

    def restart_sidecar(self) -> None:
        """Restart so the sidecar loads the champion and enriches events with its predictions."""
        assert self.children is not None and self.sidecar is not None
        self.children.stop(self.sidecar)
        self.start_sidecar()

    def wait_for_model(self, version: str, role: str = "model") -> None:
        """Until every worker of the gateway (one per core; each follows the registry's
        aliases on its own) holds ``version`` as its champion (``model_version``) or as its
        challenger (``challenger_version``)."""
        deadline = time.monotonic() + MODEL_PICKUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.gateway is not None
            self.gateway.ensure_alive()
            health = get_json(f"http://127.0.0.1:{self.port}/healthz")
            if {w.get(f"{role}_version") for w in health.get("workers", [health])} == {version}:
                self.say(
                    f"gateway hot-swapped to model version {version}"
                    if role == "model"
                    else f"gateway holds version {version} as its challenger (shadow scoring)"
                )
                return
            time.sleep(0.5)
        raise WorkFailed(f"the gateway did not pick up {role} version {version}; see {self.logs}")

    # ----------------------------------------------------------------------------- streaming
    def replay(self, manifest: Path, title: str, **kwargs: Any) -> ReplayReport:
        sessions = len({clip.speaker for clip in read_manifest(manifest)})
        with self._progress() as progress:
            task = progress.add_task(title, total=sessions)
            report = asyncio.run(
                replay(
                    manifest, url=self.url, on_session_done=lambda: progress.advance(task), **kwargs
                )
            )
        if report.errors:
            raise WorkFailed(f"replay errors: {report.errors[:3]}")
        self.say(
            f"{report.sessions} sessions, {report.clips} clips, {report.chunks_sent} chunks sent, "
            f"{report.chunks_acked} acknowledged durable, {report.final_results} final results"
        )
        return report

    def wait_for_landing(self, acked_chunks: int) -> None:
        """Until bronze holds every acknowledged chunk and the spool has nothing sealed left."""
        deadline = time.monotonic() + LANDING_TIMEOUT_S
        with self._progress() as progress:
            task = progress.add_task("sidecar landing chunks in bronze", total=acked_chunks)
            while time.monotonic() < deadline:
                assert self.sidecar is not None
                self.sidecar.ensure_alive()
                landed = self._count(AUDIO_CHUNKS)
                progress.update(task, completed=min(landed, acked_chunks))
                if landed >= acked_chunks and not sealed_segments(self.settings.spool_path):
                    return
                time.sleep(1.0)
        raise WorkFailed(f"the sidecar did not land {acked_chunks} chunks in time; see {self.logs}")

    # ----------------------------------------------------------------------------- stages
    def train_first_model(self, graph: DemoGraph) -> str:
        results = graph.features()
        self.say(
            f"gold.audio_features for {len(results)} event date(s): {[r.success for r in results]}"
        )
        run = graph.run_job(
            RETRAIN_JOB,
            run_config=candidate_config(epochs=self.options.epochs),
            tags={TRIGGER_TAG: "demo"},
        )
        training = metadata(run, TRAINING_SET)
        evaluation = metadata(run, MODEL_EVALUATION)
        candidate = metadata(run, CANDIDATE_MODEL)
        if not candidate:
            raise WorkFailed(
                f"training failed (run {run.run_id}); open the Dagster UI (make dev) for the logs"
            )
        self.summary.training_windows = int(training.get("train_windows", 0))
        self.summary.heldout_windows = int(training.get("heldout_windows", 0))
        self.summary.first_model_version = candidate["model_version"]
        self.summary.heldout_accuracy = evaluation.get("accuracy")
        self.summary.heldout_macro_f1 = evaluation.get("macro_f1")
        self.summary.gate_passed = bool(evaluation.get("gate_passed"))
        self.say(
            f"version {candidate['model_version']}: held-out accuracy "
            f"{evaluation.get('accuracy', 0):.3f} "
            f"(INT8, {self.summary.heldout_windows} windows of unseen speakers); "
            f"gate {'passed' if self.summary.gate_passed else 'refused'}"
        )
        self.say(f"reasons: {evaluation.get('reasons', '').replace(chr(10), ' ')}")
        champion = self.registry.alias_version(CHAMPION)
        if champion is None:
            raise WorkFailed("the first model did not pass the promotion gate; nothing to serve")
        return champion

    def drift_report(self, graph: DemoGraph) -> dict[str, Any]:
        graph.features()
        run = graph.materialize([table_key(DRIFT_REPORTS)])
        report = metadata(run, table_key(DRIFT_REPORTS))
        if "skipped" in report:
            self.say(f"drift report skipped: {report['skipped']}")
        else:
            self.say(
                f"drift report {report['report_id'][:8]}: {report['drifted_columns']} of "
                f"{len(SUMMARY_COLUMNS)} features drifted (share {report['drift_share']:.2f}); "
                f"dataset drift: {report['dataset_drift']}"
            )
        return report

    def sensor_tick(self, graph: DemoGraph) -> dg.SensorResult | dg.SkipReason:
        result = graph.sensor_tick()
        if isinstance(result, dg.SensorResult) and result.run_requests:
            self.say(f"drift sensor: {len(result.run_requests)} run request(s) for job `retrain`")
        else:
            reason = result if isinstance(result, dg.SkipReason) else result.skip_reason
            message = reason.skip_message if isinstance(reason, dg.SkipReason) else reason
            self.say(f"drift sensor: no run ({message})")
        return result

    def run_requested(self, graph: DemoGraph, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        run = graph.run_job(
            RETRAIN_JOB, run_config=candidate_config(epochs=self.options.epochs), tags=request.tags
        )
        evaluation = metadata(run, MODEL_EVALUATION)
        candidate = metadata(run, CANDIDATE_MODEL)
        self.summary.retraining_run_id = run.run_id
        self.summary.retraining_trigger = request.tags.get(TRIGGER_TAG)
        self.summary.retrained_model_version = candidate.get("model_version")
        self.summary.retrained_gate_passed = evaluation.get("gate_passed")
        self.summary.retrained_accuracy = evaluation.get("accuracy")
        self.say(
            f"retraining run {run.run_id[:8]}: version {candidate.get('model_version')}, "
            f"held-out accuracy {evaluation.get('accuracy', 0):.3f}, gate "
            f"{'passed' if evaluation.get('gate_passed') else 'refused'}"
        )
        self.say(f"reasons: {evaluation.get('reasons', '').replace(chr(10), ' ')}")
        return run

    def shadow_then_gate(
        self, graph: DemoGraph, corpora: DemoCorpora, retraining: dg.ExecuteInProcessResult
    ) -> None:
        """The retrained version shadow-scores the held-out speakers' replay, then the gate of
        the retraining run judges it again, now with that live evidence (same held-out set,
        same policy, same comparison the ``live_model_comparison`` asset shows)."""
        summary = self.summary
        version = summary.retrained_model_version
        assert version is not None
        self.wait_for_model(version, role="challenger")
        landed = self._count(AUDIO_CHUNKS)
        report = self.replay(
            corpora.serving,
            "devices done (the champion answers, the challenger shadows)",
            streams=self.options.streams,
            labels=True,
            speed=self.options.replay_speed,
        )
        self.wait_for_landing(landed + report.chunks_acked)
        policy = graph.resource("lifecycle").gate_policy()
        comparison: dict[str, Any] = {}
        for _ in range(SHADOW_LANDING_TRIES):  # shadow records trail the champion's by a moment
            comparison = metadata(graph.materialize([LIVE_MODEL_COMPARISON]), LIVE_MODEL_COMPARISON)
            if comparison.get("shadow_version") == version and comparison.get(
                "labelled_segments", 0
            ) >= min(policy.min_live_segments, report.final_results):
                break
            time.sleep(SERVING_POLL_INTERVAL_S)
        summary.shadow_segments = comparison.get("segments")
        summary.shadow_agreement = comparison.get("agreement")
        summary.shadow_labelled_segments = comparison.get("labelled_segments")
        summary.shadow_live_accuracy = comparison.get("shadow_accuracy")
        summary.shadow_champion_live_accuracy = comparison.get("champion_accuracy")
        self.say(
            f"live comparison: v{comparison.get('shadow_version')} shadowed "
            f"v{comparison.get('champion_version')} on {summary.shadow_segments} segments, "
            f"agreement {_pct(summary.shadow_agreement)}; on {summary.shadow_labelled_segments} "
            f"labelled: {_pct(summary.shadow_live_accuracy)} vs the champion's "
            f"{_pct(summary.shadow_champion_live_accuracy)}"
        )
        gate = PromotionGate.on_lake(
            retraining.asset_value(TRAINING_SET).heldout(), policy, self.lake
        )
        decision = self.registry.promote(version, gate)
        summary.retrained_gate_passed = decision.passed
        self.say(
            f"gate with live evidence: version {version} "
            f"{'promoted' if decision.passed else 'refused'}: {' '.join(decision.reasons)}"
        )

    def analytics(self, graph: DemoGraph) -> None:
        keys = [
            k
            for k in graph.defs.resolve_asset_graph().get_all_asset_keys()
            if k.path[0] == "analytics"
        ]
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "dbt.log").open("a") as log, redirect_stdout(log):
            run = graph.materialize(keys)  # dagster-dbt echoes dbt's output on stdout
        checks = run.get_asset_check_evaluations()
        self.summary.dbt_build_passed = run.success and all(c.passed for c in checks)
        self.say(
            f"dbt build: {len(keys)} models, "
            f"{sum(c.passed for c in checks)}/{len(checks)} tests passed"
        )
        quality = graph.run_job(OBSERVE_JOB, run_config={}, tags={TRIGGER_TAG: "demo"})
        evaluations = quality.get_asset_check_evaluations()
        self.summary.quality_checks_passed = (
            f"{sum(e.passed for e in evaluations)}/{len(evaluations)}"
        )
        self.say(f"lake quality checks: {self.summary.quality_checks_passed} passed")
        with (self.logs / "dbt.log").open("a") as log, redirect_stdout(log):
            docs_ok = generate_dbt_docs(graph.defs)
        self.say(
            "dbt docs generated" if docs_ok else f"dbt docs failed; see {self.logs / 'dbt.log'}"
        )

    def fill_counts(self) -> None:
        sessions = (
            self.lake.read(SESSIONS, columns=["device_id"]) if self.lake.exists(SESSIONS) else None
        )
        self.summary.sessions = 0 if sessions is None else sessions.num_rows
        self.summary.devices = 0 if sessions is None else len(set(sessions.column(0).to_pylist()))
        self.summary.chunks_landed = self._count(AUDIO_CHUNKS)
        self.summary.events = self._count(AUDIO_EVENTS)

    def where_to_look(self, graph: DemoGraph) -> dict[str, str]:
        paths = graph.resource("paths")
        return {
            "Dagster UI (assets, checks, runs, sensors)": "make dev  →  http://127.0.0.1:3000",
            "MLflow UI (runs, versions, aliases)": ".venv/bin/mlflow ui --backend-store-uri "
            f"{self.settings.mlflow_tracking_uri}",
            "DuckDB catalog (raw tables)": f"duckdb {self.lake.catalog_file}  or  "
            'sonolake sql "select * from silver.audio_events limit 5"',
            "analytics marts (dbt)": f"duckdb {analytics_database(paths)}  →  "
            "select * from marts.model_accuracy_daily",
            "dbt docs": "cd dbt && ../.venv/bin/dbt docs serve --port 8080",
            "drift report (Evidently HTML)": self.summary.drift_report_html or "–",
            "demo logs (gateway, sidecar)": str(self.logs),
        }


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> DemoSummary:
    """The whole loop; children are stopped whatever happens (also on Ctrl-C)."""
    started = time.perf_counter()
    prepare_locations(settings, options.reset)
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(settings))
    prepare_dbt_project()  # the analytics assets load from the dbt manifest
    demo = Demo(settings, options, console)
    summary = demo.summary
    corpora: DemoCorpora = demo_corpora(
        settings.data_dir,
        settings.state_path / "demo-data",
        training_limit=options.training_limit,
        serving_limit=options.serving_limit,
        drift_limit=options.drift_limit,
    )
    if corpora.synthetic:
        summary.data = "synthetic (real recordings not found at SONOLAKE_DATA_DIR)"
        console.print(
            f"[yellow]real recordings not found at {settings.data_dir}: "
            "using generated, labelled audio[/]"
        )
    with dg.DagsterInstance.get() as instance, Children(PROJECT_ROOT) as children:
        graph = DemoGraph(settings, instance)
        try:
            _stages(demo, corpora, graph, children)
        except KeyboardInterrupt:
            cancel_unfinished_runs(instance, "interrupted: the demo was stopped (Ctrl-C)")
            raise
    summary.total_seconds = round(time.perf_counter() - started, 1)
    summary.where_to_look = demo.where_to_look(graph)
    summary.write(summary_path(settings))
    return summary


def _stages(demo: Demo, corpora: DemoCorpora, graph: DemoGraph, children: Children) -> None:
    """The stages, in order (see the module docstring)."""
    summary, options = demo.summary, demo.options
    with demo.stage("start", "Starting the sidecar and the gateway"):
        demo.start_servers(children)
        demo.sensor_tick(graph)
    with demo.stage(
        "replay_training",
        f"Replaying {corpora.training_clips} labelled recordings as "
        f"{options.streams} concurrent devices",
    ):
        training = demo.replay(
            corpora.training,
            "devices done",
            streams=options.streams,
            labels=True,
            speed=options.replay_speed,
        )
    with demo.stage("landing", "Landing the spool into bronze and silver"):
        demo.wait_for_landing(training.chunks_acked)
        demo.fill_counts()
        demo.say(
            f"{summary.chunks_landed} chunks, {summary.events} events, "
            f"{summary.sessions} sessions in the lake"
        )
    with demo.stage(
        "train",
        "Features → training set → train → ONNX FP32/INT8/FP16 → evaluate → gate → champion",
    ):
        champion = demo.train_first_model(graph)
        demo.restart_sidecar()
        demo.wait_for_model(champion)
    with demo.stage(
        "serve",
        f"Serving the champion to {corpora.serving_clips} clips of unseen speakers, in real time",
    ):
        landed = summary.chunks_landed
        serving = demo.replay(
            corpora.serving, "devices done", streams=options.streams, labels=True, realtime=True
        )
        summary.model_version_served = ", ".join(serving.model_versions) or None
        summary.live_accuracy = serving.accuracy
        summary.client_latency_ms_p50 = serving.latency_ms_p50
        summary.client_latency_ms_p99 = serving.latency_ms_p99
        summary.dropped_chunks = serving.dropped_chunks
        demo.say(
            f"results carried model version(s) {summary.model_version_served}; "
            f"live accuracy {_pct(serving.accuracy)}; latency p50 "
            f"{serving.latency_ms_p50} ms, p99 {serving.latency_ms_p99} ms"
        )
        demo.wait_for_landing(landed + serving.chunks_acked)
        before = demo.drift_report(graph)
        summary.drift_share_before = before.get("drift_share")
        summary.drift_detected_before = before.get("dataset_drift")
        demo.sensor_tick(graph)
    with demo.stage(
        "drift", f"Replaying {corpora.drift_clips} telephone digits (8 kHz mu-law): drift"
    ):
        landed = demo._count(AUDIO_CHUNKS)
        phone = demo.replay(
            corpora.drift,
            "devices done",
            streams=options.streams,
            labels=True,
            encoding="mulaw",
            speed=options.replay_speed,
        )
        demo.wait_for_landing(landed + phone.chunks_acked)
        after = demo.drift_report(graph)
        summary.drift_share = after.get("drift_share")
        summary.drift_detected = after.get("dataset_drift")
        summary.drift_report_html = after.get("evidently_report_file")
        tick = demo.sensor_tick(graph)
    retraining = None
    with demo.stage("retrain", "The sensor's retraining run"):
        requests = tick.run_requests if isinstance(tick, dg.SensorResult) else []
        if requests:
            retraining = demo.run_requested(graph, requests[0])
        else:
            demo.say("no retraining requested: the drift report found no dataset drift")
    if retraining is not None and summary.retrained_model_version:
        if not summary.retrained_gate_passed:
            with demo.stage(
                "shadow",
                f"Shadow scoring: the held-out speakers again, version "
                f"{summary.retrained_model_version} scoring beside the champion",
            ):
                demo.shadow_then_gate(graph, corpora, retraining)
        if summary.retrained_gate_passed:
            demo.wait_for_model(summary.retrained_model_version)
            summary.model_version_served_after = summary.retrained_model_version
    summary.champion_after = demo.registry.alias_version(CHAMPION)
    with demo.stage("analytics", "dbt build, lake quality checks, dbt docs"):
        demo.analytics(graph)
        demo.fill_counts()


def summary_path(settings: Settings) -> Path:
    return Path(settings.lake_root) / SUMMARY_FILE


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
