"""`sonolake serve` answered by stock Triton clients over HTTP and gRPC, on real recordings.

One endpoint process for the module (start-up imports KServe and MLflow): health, metadata and
versions, scores of real Speech Commands clips checked against what the same version computes
in process, log-mel input, the protocol's error answers, /metrics, and — last, since it moves
the champion — a promotion and a rollback hot-swapped under concurrent callers.

This module never imports ``models.endpoint``: KServe's and tritonclient's gRPC modules both
register the ``inference.*`` protobuf symbols, and one process cannot hold both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from endpoint_support import MODEL, Endpoint, real_windows, running_endpoint
from tritonclient.utils import InferenceServerException

from features import logmel_batch
from models.registry import CHAMPION
from models.serving import ServingEngine

pytestmark = pytest.mark.integration

PROTOCOLS = ("http", "grpc")


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory, weak_bundle: Path, good_bundle: Path
) -> Iterator[Endpoint]:
    with running_endpoint(tmp_path_factory.mktemp("endpoint"), weak_bundle, good_bundle) as e:
        yield e


@pytest.fixture(scope="module")
def recordings(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    return real_windows(shared_data, tmp_path_factory.mktemp("recordings"))


@pytest.fixture(scope="module")
def expected(endpoint: Endpoint, recordings) -> dict[str, np.ndarray]:
    """What each version computes in process for the recordings (same features, same runtime)."""
    windows, _ = recordings
    out = {}
    for version, bundle in endpoint.bundles.items():
        engine = ServingEngine.from_bundle(bundle, model_version=version, top_k=100)
        index = {label: i for i, label in enumerate(engine.labels)}
        scores = np.zeros((len(windows), len(index)), np.float32)
        for row, prediction in enumerate(engine.classify_batch(windows)):
            for label, probability in prediction.top_k:
                scores[row, index[label]] = probability
        out[version] = scores
        engine.close()
    return out


def client(endpoint: Endpoint, protocol: str) -> Any:
    if protocol == "http":
        return triton_http.InferenceServerClient(endpoint.http_url)
    return triton_grpc.InferenceServerClient(endpoint.grpc_url)


def infer(c: Any, protocol: str, name: str, data: np.ndarray, version: str = "", **kw: Any) -> Any:
    module = triton_http if protocol == "http" else triton_grpc
    tensor = module.InferInput(name, list(data.shape), kw.pop("datatype", "FP32"))
    tensor.set_data_from_numpy(data)
    return c.infer(kw.pop("model", MODEL), [tensor], model_version=version)


def version_of(result: Any, protocol: str) -> str:
    response = result.get_response()
    return response["model_version"] if protocol == "http" else response.model_version


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_metadata_and_versions(endpoint: Endpoint, protocol: str) -> None:
    c = client(endpoint, protocol)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(MODEL)
    for version in ("1", "2", "champion", "challenger"):
        assert c.is_model_ready(MODEL, version)
    metadata = c.get_model_metadata(MODEL)
    if protocol == "grpc":
        metadata = {
            "versions": list(metadata.versions),
            "inputs": [
                {"name": i.name, "datatype": i.datatype, "shape": list(i.shape)}
                for i in metadata.inputs
            ],
            "outputs": [
                {"name": o.name, "datatype": o.datatype, "shape": list(o.shape)}
                for o in metadata.outputs
            ],
        }
    assert metadata["versions"] == ["1", "2"]
    assert metadata["inputs"] == [
        {"name": "AUDIO", "datatype": "FP32", "shape": [-1, 16000]},
        {"name": "LOGMEL", "datatype": "FP32", "shape": [-1, 98, 40]},
    ]
    assert metadata["outputs"] == [
        {"name": "SCORES", "datatype": "FP32", "shape": [-1, 12]},
        {"name": "LABEL", "datatype": "BYTES", "shape": [-1]},
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_real_recordings_score_as_the_named_version_does_in_process(
    endpoint: Endpoint, protocol: str, recordings, expected: dict[str, np.ndarray]
) -> None:
    windows, _ = recordings
    c = client(endpoint, protocol)
    labels = None
    for version, served in (
        ("", "1"),
        ("1", "1"),
        ("2", "2"),
        ("champion", "1"),
        ("challenger", "2"),
    ):
        result = infer(c, protocol, "AUDIO", windows, version)
        assert version_of(result, protocol) == served
        scores = result.as_numpy("SCORES")
        np.testing.assert_allclose(scores, expected[served], atol=1e-5)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)
        top = [label.decode() for label in result.as_numpy("LABEL")]
        labels = labels or list(__import__("json").loads(_labels_parameter(result, protocol)))
        assert top == [labels[i] for i in expected[served].argmax(axis=1)]
    assert expected["1"].argmax(axis=1).tolist() != expected["2"].argmax(axis=1).tolist()


def _labels_parameter(result: Any, protocol: str) -> str:
    response = result.get_response()
    if protocol == "http":
        return response["parameters"]["labels"]
    return response.parameters["labels"].string_param


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_logmel_input_scores_like_audio(
    endpoint: Endpoint, protocol: str, recordings, expected: dict[str, np.ndarray]
) -> None:
    windows, _ = recordings
    result = infer(client(endpoint, protocol), protocol, "LOGMEL", logmel_batch(windows), "2")
    assert version_of(result, protocol) == "2"
    np.testing.assert_allclose(result.as_numpy("SCORES"), expected["2"], atol=1e-5)


BAD_REQUESTS = [
    # (what, input name, data, datatype, model, version, http status, gRPC status)
    (
        "wrong shape",
        "AUDIO",
        np.zeros((2, 100), np.float32),
        "FP32",
        MODEL,
        "",
        "400",
        "INVALID_ARGUMENT",
    ),
    (
        "wrong dtype",
        "AUDIO",
        np.zeros((1, 16000), np.float64),
        "FP64",
        MODEL,
        "",
        "400",
        "INVALID_ARGUMENT",
    ),
    (
        "unknown input",
        "WAVE",
        np.zeros((1, 16000), np.float32),
        "FP32",
        MODEL,
        "",
        "400",
        "INVALID_ARGUMENT",
    ),
    (
        "unknown model",
        "AUDIO",
        np.zeros((1, 16000), np.float32),
        "FP32",
        "no-such-model",
        "",
        "404",
        "NOT_FOUND",
    ),
    (
        "unknown version",
        "AUDIO",
        np.zeros((1, 16000), np.float32),
        "FP32",
        MODEL,
        "99",
        "404",
        "NOT_FOUND",
    ),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_the_protocols_error_answers(
    endpoint: Endpoint, protocol: str, case: tuple
) -> None:
    _, name, data, datatype, model, version, http_status, grpc_status = case
    with pytest.raises(InferenceServerException) as error:
        infer(
            client(endpoint, protocol),
            protocol,
            name,
            data,
            version,
            datatype=datatype,
            model=model,
        )
    status = str(error.value.status())
    assert status == (http_status if protocol == "http" else f"StatusCode.{grpc_status}")
    assert error.value.message()  # says what to change


def test_unknown_version_is_not_ready(endpoint: Endpoint) -> None:
    assert not triton_http.InferenceServerClient(endpoint.http_url).is_model_ready(MODEL, "99")
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        triton_grpc.InferenceServerClient(endpoint.grpc_url).is_model_ready(MODEL, "99")


def test_metrics_per_version(endpoint: Endpoint, recordings) -> None:
    windows, _ = recordings
    infer(client(endpoint, "grpc"), "grpc", "AUDIO", windows, "1")
    text = httpx.get(f"http://{endpoint.http_url}/metrics", timeout=5).text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sonolake_endpoint_")
    }
    assert values['sonolake_endpoint_requests_total{model_version="1"}'] >= len(windows)
    assert values['sonolake_endpoint_batch_size_count{model_version="1"}'] >= 1
    assert 'sonolake_endpoint_request_latency_seconds_sum{model_version="1"}' in values
    assert 'sonolake_endpoint_batch_seconds_sum{model_version="2"}' in values
    assert values['sonolake_endpoint_alias{alias="champion",model_version="1"}'] == 1.0


def test_promotion_and_rollback_hot_swap_without_failing_a_request(
    endpoint: Endpoint, recordings, expected: dict[str, np.ndarray]
) -> None:
    """Callers stream requests over both protocols while `champion` moves 1 → 2 → 1."""
    windows, _ = recordings
    results: list[tuple[str, str, np.ndarray]] = []  # (phase, version, scores)
    failures: list[BaseException] = []
    phase = ["before"]
    stop = threading.Event()

    def caller(protocol: str) -> None:
        c = client(endpoint, protocol)
        while not stop.is_set():
            current = phase[0]
            try:
                result = infer(c, protocol, "AUDIO", windows[:2])
            except BaseException as exc:
                failures.append(exc)
                return
            results.append((current, version_of(result, protocol), result.as_numpy("SCORES")))

    threads = [threading.Thread(target=caller, args=(p,)) for p in (*PROTOCOLS, *PROTOCOLS)]
    for thread in threads:
        thread.start()
    registry = endpoint.registry()
    try:
        for target, name in (("2", "promoted"), ("1", "rolled back")):
            time.sleep(0.5)
            registry.set_alias(CHAMPION, target)
            phase[0] = name
            deadline = time.monotonic() + 30
            while not any(p == name and v == target for p, v, _ in results[-20:]):
                assert time.monotonic() < deadline, f"champion {target} was not served in time"
                assert not failures, failures
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures
    assert {v for _, v, _ in results} == {"1", "2"}
    # Each answer is what the version it names computes. Callers share micro-batches here, and
    # dynamically quantized INT8 scales activations per batch, so scores move by up to ~1e-2
    # with the batch's company; the two versions differ by far more (version 1 gives 0 to four
    # labels).
    for _, version, scores in results:
        np.testing.assert_allclose(scores, expected[version][:2], atol=0.03)
        assert scores.argmax(axis=1).tolist() == expected[version][:2].argmax(axis=1).tolist()
