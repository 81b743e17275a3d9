"""The endpoint's tensors: names, shapes and data types, and the checks on what callers send.

One request carries exactly one input tensor:

- ``AUDIO``: FP32 ``[B, 16000]``, 1-s windows of 16 kHz mono audio in [-1, 1]. The endpoint
  computes the model's input itself with :func:`models.bundle.model_inputs`, the function
  training uses, so a caller cannot featurise differently from training.
- ``LOGMEL``: FP32 ``[B, 98, 40]`` (frames × mel bands), for callers that already computed the
  features with the same code. A version whose bundle takes audio (``input_kind`` ``audio``,
  the embedding classifier) refuses it with ``InvalidInput``: send ``AUDIO``.

The response has ``SCORES`` (FP32 ``[B, n_labels]``, softmax probabilities in the order of
the model's labels), ``LABEL`` (BYTES ``[B]``, the best label, UTF-8), the version that
produced them in the response's ``model_version``, and the label order of ``SCORES`` as the
response parameter ``labels`` (a JSON list). A bad tensor is refused with KServe's
``InvalidInput`` (HTTP 400, gRPC ``INVALID_ARGUMENT``) naming what to change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from features import CLASSIFIER_WINDOW_SAMPLES, N_MELS, WINDOW_FRAMES

AUDIO = "AUDIO"
LOGMEL = "LOGMEL"
SCORES = "SCORES"
LABEL = "LABEL"
FP32 = "FP32"
BYTES = "BYTES"
MAX_WINDOWS_PER_REQUEST = 1024
"""Windows one request may carry (64 MiB of FP32 audio): bounds a request's memory."""


def input_types() -> list[dict[str, Any]]:
    """Model metadata ``inputs`` (-1: any batch size)."""
    return [
        {"name": AUDIO, "datatype": FP32, "shape": [-1, CLASSIFIER_WINDOW_SAMPLES]},
        {"name": LOGMEL, "datatype": FP32, "shape": [-1, WINDOW_FRAMES, N_MELS]},
    ]


def output_types(n_labels: int) -> list[dict[str, Any]]:
    """Model metadata ``outputs``."""
    return [
        {"name": SCORES, "datatype": FP32, "shape": [-1, n_labels]},
        {"name": LABEL, "datatype": BYTES, "shape": [-1]},
    ]


@dataclass(frozen=True)
class Batch:
    """What a request asks to classify: windows of audio, or log-mel features."""

    kind: str
    """:data:`AUDIO` or :data:`LOGMEL`."""
    data: np.ndarray
    """``[B, 16000]`` or ``[B, 98, 40]`` float32."""


_SHAPES = {AUDIO: (CLASSIFIER_WINDOW_SAMPLES,), LOGMEL: (WINDOW_FRAMES, N_MELS)}


def read_batch(request: InferRequest) -> Batch:
    """The one input of ``request``, checked: its name, data type and shape."""
    if len(request.inputs) != 1:
        names = [i.name for i in request.inputs]
        raise InvalidInput(f"send exactly one input tensor, {AUDIO} or {LOGMEL}; got {names}")
    tensor = request.inputs[0]
    if tensor.name not in _SHAPES:
        raise InvalidInput(
            f"unknown input {tensor.name!r}; send {AUDIO} (FP32 [-1, "
            f"{CLASSIFIER_WINDOW_SAMPLES}], 16 kHz mono) or {LOGMEL} (FP32 [-1, "
            f"{WINDOW_FRAMES}, {N_MELS}])"
        )
    if tensor.datatype != FP32:
        raise InvalidInput(f"input {tensor.name} must be {FP32}, got {tensor.datatype}")
    want = _SHAPES[tensor.name]
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) != 1 + len(want) or shape[1:] != want or shape[0] < 1:
        raise InvalidInput(
            f"input {tensor.name} must have shape [-1, {', '.join(map(str, want))}], got "
            f"{list(shape)}"
        )
    if shape[0] > MAX_WINDOWS_PER_REQUEST:
        raise InvalidInput(
            f"input {tensor.name} has {shape[0]} rows; send at most {MAX_WINDOWS_PER_REQUEST} "
            "per request"
        )
    data = np.asarray(tensor.as_numpy(), dtype=np.float32).reshape(shape)
    if not np.isfinite(data).all():
        raise InvalidInput(f"input {tensor.name} holds NaN or infinite values")
    return Batch(tensor.name, data)


def response(
    request: InferRequest,
    model_name: str,
    version: str,
    scores: np.ndarray,
    labels: tuple[str, ...],
) -> InferResponse:
    """``SCORES`` and ``LABEL`` of ``scores`` ``[B, n_labels]`` for ``request``."""
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    top = np.array([labels[i].encode() for i in scores.argmax(axis=1)], dtype=np.object_)
    outputs = [
        InferOutput(SCORES, list(scores.shape), FP32, data=scores),
        InferOutput(LABEL, [len(top)], BYTES, data=top),
    ]
    for output in outputs:  # raw bytes first: KServe's to_grpc cannot take a NumPy array here
        output.set_data_from_numpy(output.data, binary_data=True)
    return InferResponse(
        response_id=request.id or "",
        model_name=model_name,
        model_version=version,
        infer_outputs=outputs,
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
        parameters={"labels": json.dumps(list(labels))},
    )
