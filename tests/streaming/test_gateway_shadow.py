"""Champion and challenger in one gateway: model selection, shadow scoring, its landing.

Real pieces throughout: two model versions in a real MLflow SQLite registry (small linear
bundles of the real bundle format), engines that follow the ``champion`` and ``challenger``
aliases, a real gateway over real WebSocket connections, the real spool, and the real sidecar
landing ``gold.predictions`` in a Delta lake.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from gateway_support import chunks, next_message, open_ws, read_until_closed, speech_stream

from benchmarks.gateway import write_linear_bundle
from lake_schemas import AUDIO_EVENTS, PREDICTIONS, Lake
from models.registry import CHAMPION, Registry
from models.serving import CPU_PROVIDER, ServingEngine
from sonolake.commands.streaming import hold_models, version_loader
from sonolake.settings import Settings
from streaming.gateway.protocol import CLOSE_NORMAL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, str, str]:
    """Version 1 is the champion, version 2 the challenger, in a real MLflow SQLite store."""
    root = tmp_path_factory.mktemp("registry")
    registry = Registry(
        f"sqlite:///{root / 'mlflow.db'}",
        f"kws-{uuid.uuid4().hex[:8]}",
        root / "mlartifacts",
        cache_dir=root / "cache",
    )
    champion = registry.log_bundle(write_linear_bundle(root / "b1", seed=1), {}, {})
    challenger = registry.log_bundle(write_linear_bundle(root / "b2", seed=2), {}, {})
    registry.set_alias(CHAMPION, champion)
    registry.set_alias("challenger", challenger)
    return registry, champion, challenger


@pytest.fixture
def engines(two_versions: tuple[Registry, str, str]) -> Iterator[dict[str, ServingEngine]]:
    registry = two_versions[0]
    held = {
        role: ServingEngine.from_registry(
            registry, alias, providers=[CPU_PROVIDER], max_wait_us=500
        )
        for role, alias in (("champion", CHAMPION), ("challenger", "challenger"))
    }
    yield held
    for engine in held.values():
        engine.close()


def _gateway(make_gateway: Any, engines: dict[str, ServingEngine], **overrides: Any) -> Any:
    # room for a whole unpaced clip: no audio is dropped from processing, so every word is scored
    gateway = make_gateway(engine=engines["champion"], max_pending_ms=30_000, **overrides)
    assert gateway.gateway is not None
    hold_models(gateway.gateway, engines["champion"], engines["challenger"])
    return gateway


def _stream(gateway: Any, shared_data: Path, query: str, label: str = "yes") -> Any:
    with open_ws(gateway.url(query)) as ws:
        metadata = next_message(ws)
        ws.send(json.dumps({"type": "Label", "label": label}))
        for frame in chunks(speech_stream(shared_data, words=2, gap_s=1.0)):
            ws.send(frame)
        ws.send(json.dumps({"type": "CloseStream"}))
        transcript = read_until_closed(ws, timeout_s=20)
    assert transcript.close_code == CLOSE_NORMAL
    return metadata, transcript


def test_challenger_shadow_scores_the_same_segments_and_lands_as_shadow(
    make_gateway: Any,
    engines: dict[str, ServingEngine],
    two_versions: tuple[Registry, str, str],
    shared_data: Path,
    tmp_path: Path,
) -> None:
    _, champion, challenger = two_versions
    gateway = _gateway(make_gateway, engines)
    metadata, transcript = _stream(gateway, shared_data, "device_id=d1")
    assert metadata["model_version"] == champion and metadata["model_role"] == "champion"
    results = transcript.of("Results")
    finals = [r for r in results if r["is_final"]]
    assert finals, "the champion answered"
    assert {r["model_version"] for r in results} == {champion}  # clients never see the shadow
    gateway.call(gateway.gateway.shadow.drained())
    assert gateway.gateway.shadow.outcomes["scored"] == len(finals)

    from streaming.sidecar.driver import Sidecar, SidecarConfig

    gateway.seal()
    lake = Lake(tmp_path / "lake")
    sidecar = Sidecar(lake, SidecarConfig(gateway.spool_dir, tmp_path / "sidecar"))
    while sidecar.land_once() is not None:
        pass
    rows = lake.read(PREDICTIONS)
    finals_landed = rows.filter(pc.field("is_final"))
    by_role: dict[str, list[dict[str, Any]]] = {"champion": [], "shadow": []}
    for row in finals_landed.to_pylist():
        by_role[row["role"]].append(row)
    assert {r["model_version"] for r in by_role["champion"]} == {champion}
    assert {r["model_version"] for r in by_role["shadow"]} == {challenger}
    champion_rows = {r["result_index"]: r for r in by_role["champion"]}
    assert len(by_role["shadow"]) == len(finals)
    for shadow in by_role["shadow"]:
        paired = champion_rows[shadow["result_index"]]  # the same segment, scored twice
        assert (shadow["start_s"], shadow["duration_s"]) == (
            paired["start_s"],
            paired["duration_s"],
        )
        assert shadow["label"] == "yes" == paired["label"]
        assert shadow["prediction_id"] == paired["prediction_id"] + "/shadow"
    assert lake.read(AUDIO_EVENTS).num_rows == len(finals)  # a shadow adds no event

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/metrics").read().decode()
    assert f'sonolake_gateway_shadow_segments_total{{outcome="scored"}} {len(finals)}.0' in metrics
    assert 'sonolake_inference_requests_total{role="challenger"}' in metrics
    assert (
        f'sonolake_inference_model_info{{artifact="fp32",model_version="{challenger}",'
        f'provider="CPUExecutionProvider",role="challenger"}} 1.0' in metrics
    )
    assert 'sonolake_inference_batch_size_bucket{le="+Inf",role="champion"}' in metrics


@pytest.mark.parametrize(
    ("model", "role", "warning"),
    [
        ("challenger", "challenger", None),
        ("{challenger}", "challenger", None),
        ("{champion}", "champion", None),
        ("99", "champion", "model_unavailable"),
        ("nova-3", "champion", "model_fallback"),
    ],
)
def test_model_parameter_selects_a_held_model(
    make_gateway: Any,
    engines: dict[str, ServingEngine],
    two_versions: tuple[Registry, str, str],
    shared_data: Path,
    model: str,
    role: str,
    warning: str | None,
) -> None:
    _, champion, challenger = two_versions
    model = model.format(champion=champion, challenger=challenger)
    version = {"champion": champion, "challenger": challenger}[role]
    gateway = _gateway(make_gateway, engines)
    metadata, transcript = _stream(gateway, shared_data, f"device_id=d2&model={model}")
    assert metadata["model_version"] == version and metadata["model_role"] == role
    warnings = [w["code"] for w in transcript.of("Warning")]
    assert warnings == ([warning] if warning else [])
    results = transcript.of("Results")
    assert results and {r["model_version"] for r in results} == {version}
    assert transcript.of("Metadata")[-1]["totals"]["model_version"] == version
    gateway.call(gateway.gateway.shadow.drained())
    shadowed = gateway.gateway.shadow.outcomes["scored"]
    assert shadowed == (0 if role == "challenger" else sum(r["is_final"] for r in results))


def test_shadow_scoring_stays_within_its_budget_and_counts_what_it_drops(
    make_gateway: Any, engines: dict[str, ServingEngine], shared_data: Path
) -> None:
    # a budget of one window now and then: the first segment is scored, the rest are dropped
    gateway = _gateway(make_gateway, engines, shadow_windows_per_s=0.001)
    _, transcript = _stream(gateway, shared_data, "device_id=d3")
    finals = sum(r["is_final"] for r in transcript.of("Results"))
    assert finals >= 2
    gateway.call(gateway.gateway.shadow.drained())
    outcomes = gateway.gateway.shadow.outcomes
    assert outcomes["scored"] == 1 and outcomes["over_budget"] == finals - 1
    stored = gateway.stored().to_pylist()
    assert sum(r["role"] == "shadow" for r in stored) == 1


@pytest.fixture(scope="module")
def unaliased_version(
    two_versions: tuple[Registry, str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, str]:
    """A third registered version that no alias names, and settings that open its registry."""
    registry = two_versions[0]
    root = tmp_path_factory.mktemp("held")
    version = registry.log_bundle(
        write_linear_bundle(root / "b3", seed=3), {}, {}, set_challenger=False
    )
    settings = Settings(
        _env_file=None,
        state_dir=root / "state",
        lake_uri=str(root / "lake"),
        mlflow_uri=registry.tracking_uri,
        mlflow_artifacts_uri=str(registry.artifact_root),
        model_name=registry.model_name,
    )
    return settings, version


def test_a_version_a_session_names_is_loaded_once_and_answers_it(
    make_gateway: Any,
    engines: dict[str, ServingEngine],
    unaliased_version: tuple[Settings, str],
    shared_data: Path,
) -> None:
    settings, version = unaliased_version
    gateway = _gateway(make_gateway, engines)
    gateway.gateway.set_version_loader(version_loader(settings))
    held = gateway.gateway.held_versions
    for device in ("d3", "d4"):  # the second session finds it held
        metadata, transcript = _stream(gateway, shared_data, f"device_id={device}&model={version}")
        assert (metadata["model_version"], metadata["model_role"]) == (version, "held")
        assert not transcript.of("Warning")
        results = transcript.of("Results")
        assert results and {r["model_version"] for r in results} == {version}
    assert (held.loads, held.versions) == (1, [version])
    gateway.call(gateway.gateway.shadow.drained())
    assert gateway.gateway.shadow.outcomes["scored"] == 0, "a chosen version is not shadowed"

    # a version nobody registered: one registry lookup, remembered; the champion answers
    for device in ("d5", "d6"):
        metadata, transcript = _stream(gateway, shared_data, f"device_id={device}&model=4242")
        assert metadata["model_role"] == "champion"
        assert [w["code"] for w in transcript.of("Warning")] == ["model_unavailable"]
    assert (held.loads, held.load_failures) == (1, 1)


def test_held_versions_are_bounded_and_never_evicted(
    make_gateway: Any,
    engines: dict[str, ServingEngine],
    two_versions: tuple[Registry, str, str],
    unaliased_version: tuple[Settings, str],
    shared_data: Path,
) -> None:
    settings, version = unaliased_version
    _, champion, _ = two_versions
    gateway = _gateway(make_gateway, engines, held_versions=1)
    gateway.gateway.set_version_loader(version_loader(settings))
    metadata, _ = _stream(gateway, shared_data, f"device_id=d7&model={version}")
    assert metadata["model_role"] == "held"
    # the room is taken: another version (here the champion's, held under no other name) waits
    # for none and evicts nothing; the champion serves with a Warning
    held = gateway.gateway.held_versions
    assert gateway.call(held.get(champion)) is None and held.versions == [version]
    none_held = _gateway(make_gateway, engines, held_versions=0)
    none_held.gateway.set_version_loader(version_loader(settings))
    metadata, transcript = _stream(none_held, shared_data, f"device_id=d8&model={version}")
    assert (metadata["model_version"], metadata["model_role"]) == (champion, "champion")
    assert [w["code"] for w in transcript.of("Warning")] == ["model_unavailable"]
