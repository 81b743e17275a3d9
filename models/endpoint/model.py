"""The KServe model ``audio-event-classifier``: requests → the engine of the version they name.

``AUDIO`` windows go one by one into the version's :meth:`ServingEngine.classify`, so windows
from every caller — HTTP and gRPC alike, since both servers share one event loop — wait together
in that version's micro-batcher and run as one ONNX Runtime batch (dynamic batching across
callers, bounded by ``max_batch`` and ``max_wait_us``). The engine computes log-mel with the
training code. ``LOGMEL`` features skip the feature step and run as one batch per request on a
worker thread. Scores come back in the model's label order.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.protocol.infer_type import InferRequest, InferResponse

from models.endpoint import tensors
from models.endpoint.versions import NoChampionServed, ServedVersions, UnknownVersion
from models.serving import Prediction, ServingEngine


class AudioEventClassifier(Model):
    """One registered model with its served versions (see :class:`ServedVersions`)."""

    def __init__(self, name: str, versions: ServedVersions) -> None:
        super().__init__(name)
        self.versions = versions
        self.logmel_windows: Counter[str] = Counter()
        self.ready = True  # KServe reads this once; readiness proper is :meth:`healthy`

    async def healthy(self) -> bool:
        """Ready when a champion version is loaded (what a request without a version gets)."""
        return self.versions.champion in self.versions.engines

    def load(self) -> bool:
        return True  # versions load by following the registry, never on a request

    def version_ready(self, version: str) -> bool:
        """Whether ``version`` (a version or an alias) is loaded; raises ModelNotFound if not."""
        self.check_version(version)
        return True

    def check_version(self, version: str | None) -> str:
        try:
            return self.versions.resolve(version)[0]
        except UnknownVersion as exc:
            raise not_found(self.name, str(exc)) from None
        except NoChampionServed as exc:
            raise ModelNotReady(self.name, str(exc)) from None

    def get_input_types(self) -> list[dict[str, Any]]:
        return tensors.input_types()

    def get_output_types(self) -> list[dict[str, Any]]:
        champion = self.versions.engines.get(self.versions.champion or "")
        any_engine = champion or next(iter(self.versions.engines.values()), None)
        n_labels = len(any_engine.labels) if any_engine else -1
        return tensors.output_types(n_labels)

    async def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        batch = tensors.read_batch(payload)
        self.check_version(payload.model_version)
        with self.versions.in_use(payload.model_version) as (version, engine):
            if batch.kind == tensors.AUDIO:
                predictions = await asyncio.gather(*(engine.classify(w) for w in batch.data))
                scores = scores_of(predictions, engine.labels)
            else:
                model = engine.model
                if model is None:
                    raise ModelNotReady(self.name, f"version {version} has no model loaded")
                if model.input_kind != "logmel":
                    raise InvalidInput(
                        f"version {version} computes its own features from audio: send the "
                        f"{tensors.AUDIO} tensor, not {tensors.LOGMEL}"
                    )
                scores = await asyncio.to_thread(model.run, batch.data)
                self.logmel_windows[version] += len(scores)
            return tensors.response(payload, self.name, version, scores, engine.labels)


def scores_of(predictions: list[Prediction], labels: tuple[str, ...]) -> np.ndarray:
    """``[B, n_labels]`` probabilities from predictions whose ``top_k`` holds every label."""
    index = {label: i for i, label in enumerate(labels)}
    scores = np.zeros((len(predictions), len(labels)), dtype=np.float32)
    for row, prediction in enumerate(predictions):
        for label, probability in prediction.top_k:
            scores[row, index[label]] = probability
    return scores


def not_found(name: str, reason: str) -> ModelNotFound:
    """KServe's ModelNotFound (HTTP 404, gRPC NOT_FOUND) with our reason."""
    error = ModelNotFound(name)
    error.reason = f"model {name!r}: {reason}"
    return error


def engine_for_version(
    bundle: Any,
    version: str,
    *,
    providers: list[str] | None,
    max_batch: int,
    max_wait_us: int,
    intra_op_threads: int,
) -> ServingEngine:
    """A warmed engine for one version whose predictions carry every label's probability."""
    return ServingEngine.from_bundle(
        bundle,
        providers=providers,
        max_batch=max_batch,
        max_wait_us=max_wait_us,
        intra_op_threads=intra_op_threads,
        model_version=version,
        top_k=1_000_000,  # every label: SCORES is the whole distribution
    )
