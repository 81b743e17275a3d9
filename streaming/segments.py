"""The one segmenter over a whole clip: what batch paths call to find utterances.

The gateway segments live, window by window, with :class:`streaming.endpointing.Endpointer`.
A batch job (``sonolake reprocess``: re-deriving utterances from bronze audio with another
model) must find the *same* utterances, so it runs that same class over the clip's VAD
probabilities here — no second set of rules, no second set of defaults. Probabilities come
from :func:`streaming.vad.speech_probabilities_many` with the gateway's level gate
(:data:`streaming.vad.DEFAULT_GATE_DBFS`), so 16 kHz audio scores exactly as it did live.

Units: samples of the 16 kHz stream clock; one VAD window is
:data:`streaming.vad.WINDOW_SAMPLES` (512 samples, 32 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streaming.endpointing import (
    DEFAULT_ENDPOINTING_MS,
    DEFAULT_MAX_UTTERANCE_MS,
    DEFAULT_MIN_SPEECH_MS,
    DEFAULT_THRESHOLD_OFF,
    DEFAULT_THRESHOLD_ON,
    Endpointer,
)
from streaming.vad import DEFAULT_GATE_DBFS, WINDOW_SAMPLES

END_OF_AUDIO = "close"
"""End reason of an utterance still open when the clip ends (as CloseStream does live)."""


@dataclass(frozen=True)
class SegmenterParams:
    """The endpointer's knobs, with the gateway's defaults (units in the names)."""

    endpointing_ms: int | None = DEFAULT_ENDPOINTING_MS
    threshold_on: float = DEFAULT_THRESHOLD_ON
    threshold_off: float = DEFAULT_THRESHOLD_OFF
    min_speech_ms: int = DEFAULT_MIN_SPEECH_MS
    max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS
    vad_gate_dbfs: float | None = DEFAULT_GATE_DBFS
    """VAD windows quieter than this skip the model (probability 0), as in the gateway."""

    def endpointer(self) -> Endpointer:
        return Endpointer(
            self.endpointing_ms,
            threshold_on=self.threshold_on,
            threshold_off=self.threshold_off,
            min_speech_ms=self.min_speech_ms,
            max_utterance_ms=self.max_utterance_ms,
        )


@dataclass(frozen=True)
class Span:
    """One utterance: ``[start_sample, end_sample)`` on the stream clock and why it ended."""

    start_sample: int
    end_sample: int
    reason: str
    speech_ratio: float
    """Share of the VAD windows inside the span at or above ``threshold_on`` (0..1)."""


def speech_ratio(probs: np.ndarray, start_sample: int, end_sample: int, on: float) -> float:
    """Share of the windows in ``[start_sample, end_sample)`` scored at or above ``on``."""
    first = start_sample // WINDOW_SAMPLES
    last = max(first + 1, -(-end_sample // WINDOW_SAMPLES))
    inside = probs[first:last]
    return float(np.mean(inside >= on)) if inside.size else 0.0


def find_utterances(probs: np.ndarray, params: SegmenterParams | None = None) -> list[Span]:
    """Utterances of a clip from its per-window speech probabilities (window i covers samples
    ``[i·512, (i+1)·512)``). An utterance still open at the end closes with reason
    :data:`END_OF_AUDIO`, as the gateway closes one on CloseStream."""
    params = params or SegmenterParams()
    endpointer = params.endpointer()
    spans: list[Span] = []
    start = 0
    for index, prob in enumerate(np.asarray(probs, dtype=np.float64).tolist()):
        event = endpointer.push(prob, index * WINDOW_SAMPLES, (index + 1) * WINDOW_SAMPLES)
        if event is None:
            continue
        if event.kind == "start":
            start = event.sample
        else:
            spans.append(_span(probs, start, event.sample, event.reason, params))
    event = endpointer.force_end(END_OF_AUDIO)
    if event is not None:
        spans.append(_span(probs, start, event.sample, event.reason, params))
    return spans


def _span(probs: np.ndarray, start: int, end: int, reason: str, params: SegmenterParams) -> Span:
    return Span(start, end, reason, speech_ratio(probs, start, end, params.threshold_on))
