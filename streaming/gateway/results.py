"""What the gateway says about speech: the classifier it asks and the messages it sends.

The gateway depends on the serving engine only through :class:`Classifier` (the subset of
:class:`models.serving.ServingEngine` it calls), so it runs — and says so — with no model at
all. Without a model a ``Results`` message still marks the segment (start, duration, last seq)
but its ``label``, ``score`` and ``model_version`` are null: never a made-up label. Times are
seconds on the stream clock (16 kHz samples since the stream's first sample).
"""

from __future__ import annotations

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
) -> dict[str, Any]:
    alternatives = (
        [{"label": label, "score": round(float(score), 4)} for label, score in prediction.top_k]
        if prediction is not None
        else []
    )
    return {
        "type": "Results",
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
        "utterance": utterance,
        "timestamp": seconds(start_sample),
        "last_seq": last_seq,
    }


def utterance_end_message(
    utterance: int, end_sample: int, reason: str | None, last_seq: int
) -> dict[str, Any]:
    return {
        "type": "UtteranceEnd",
        "utterance": utterance,
        "last_word_end": seconds(end_sample),
        "reason": reason,
        "last_seq": last_seq,
    }
