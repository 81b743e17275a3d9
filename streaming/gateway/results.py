"""What the gateway says about speech: the classifier it asks and the messages it sends.

The gateway depends on the serving engine only through :class:`Classifier` (the subset of
:class:`models.serving.ServingEngine` it calls), so it runs — and says so — with no model at
all. Without a model a ``Results`` message still marks the segment (start, duration, last seq)
but its ``label``, ``score`` and ``model_version`` are null: never a made-up label. Times are
seconds on the stream clock (16 kHz samples since the stream's first sample).

Every message also carries Deepgram's fields (``channel_index``, ``channel.alternatives[]``
with ``transcript``/``confidence``/``words``, ``metadata``, ``channel`` on the VAD events), so
a stock Deepgram SDK parses them into its typed models. A keyword classifier's "transcript"
is its label — except the two non-word labels, :data:`NON_WORD_LABELS`, which become an empty
transcript with no words, as Deepgram reports audio without speech. Sonolake's own fields
(``label``, ``score``, ``alternatives``, ``utterance``, ``last_seq``) keep the raw label.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import numpy as np

from features.pcm import SAMPLE_RATE_HZ


class Prediction(Protocol):
    label: str
    score: float
    top_k: list[tuple[str, float]]
    model_version: str | None


class Classifier(Protocol):
    """What the gateway needs of the serving engine."""

    @property
    def loaded(self) -> bool: ...

    @property
    def model_version(self) -> str | None: ...

    async def classify(self, window_16k: np.ndarray) -> Any: ...

    def queue_wait_s(self) -> float:
        """Seconds the oldest window waiting for the model has waited (interims skip past it)."""
        ...


NON_WORD_LABELS = frozenset({"_silence_", "_unknown_"})
"""Labels that are not a keyword: "" as a Deepgram transcript (Sonolake's ``label`` keeps them)."""
MODEL_NAME = "sonolake-keywords"
MODEL_ARCH = "onnx"
CHANNEL_INDEX = [0, 1]
"""Deepgram's ``[channel, channels]``: the gateway takes one channel."""


def model_uuid(model_version: str | None) -> str:
    """A stable UUID per model version (UUIDv5), for Deepgram's ``metadata.model_uuid``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sonolake:{MODEL_NAME}:{model_version or 'none'}"))


def transcript_of(label: str | None) -> str:
    return "" if label is None or label in NON_WORD_LABELS else label


def _alternative(label: str | None, score: float, start_s: float, end_s: float) -> dict[str, Any]:
    """One Deepgram alternative: the label as a one-word transcript with its time span."""
    transcript = transcript_of(label)
    words = (
        [
            {
                "word": transcript,
                "punctuated_word": transcript,
                "start": start_s,
                "end": end_s,
                "confidence": score,
            }
        ]
        if transcript
        else []
    )
    return {"transcript": transcript, "confidence": score, "words": words, "label": label}


def seconds(samples: int) -> float:
    """Stream-clock samples → seconds, rounded to the millisecond."""
    return round(samples / SAMPLE_RATE_HZ, 3)


def results_message(
    *,
    utterance: int,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
    start_sample: int,
    end_sample: int,
    last_seq: int,
    prediction: Prediction | None,
    top_k: int,
    request_id: str = "",
) -> dict[str, Any]:
    """A ``Results`` message; ``request_id`` is the connection's (from its ``Metadata``)."""
    alternatives = (
        [{"label": label, "score": round(float(score), 4)} for label, score in prediction.top_k]
        if prediction is not None
        else []
    )
    start_s = seconds(start_sample)
    end_s = seconds(max(start_sample, end_sample))
    ranked = list(prediction.top_k)[:top_k] if prediction is not None else []
    spoken = [_alternative(label, round(float(p), 4), start_s, end_s) for label, p in ranked]
    if not spoken:  # no model: an empty transcript, so the segment still parses as Results
        spoken = [_alternative(None, 0.0, start_s, end_s)]
    version = prediction.model_version if prediction is not None else None
    return {
        "type": "Results",
        "channel_index": CHANNEL_INDEX,
        "channel": {"alternatives": spoken},
        "metadata": {
            "request_id": request_id,
            "model_info": {"name": MODEL_NAME, "version": version or "none", "arch": MODEL_ARCH},
            "model_uuid": model_uuid(version),
        },
        "utterance": utterance,
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "start": seconds(start_sample),
        "duration": seconds(max(0, end_sample - start_sample)),
        "label": prediction.label if prediction is not None else None,
        "score": round(float(prediction.score), 4) if prediction is not None else None,
        "alternatives": alternatives[:top_k],
        "model_version": prediction.model_version if prediction is not None else None,
        "last_seq": last_seq,
    }


def speech_started_message(utterance: int, start_sample: int, last_seq: int) -> dict[str, Any]:
    return {
        "type": "SpeechStarted",
        "channel": CHANNEL_INDEX[:1],
        "utterance": utterance,
        "timestamp": seconds(start_sample),
        "last_seq": last_seq,
    }


def utterance_end_message(
    utterance: int, end_sample: int, reason: str | None, last_seq: int
) -> dict[str, Any]:
    return {
        "type": "UtteranceEnd",
        "channel": CHANNEL_INDEX,
        "utterance": utterance,
        "last_word_end": seconds(end_sample),
        "reason": reason,
        "last_seq": last_seq,
    }
