"""Turning per-window speech probabilities into utterances (speech start / speech end).

Hysteresis keeps a flickering probability from chopping speech: speech starts only after the
probability stays at or above ``threshold_on`` for ``min_speech_ms``, and once in speech only
windows below ``threshold_off`` count as silence. ``endpointing_ms`` of such silence ends the
utterance; a window back above ``threshold_off`` resets the silence count. Positions are in
samples of the 16 kHz stream clock (audio dropped under backpressure still advances it).

This is the ONE segmenter: the gateway runs it live, window by window, and every batch path
(``sonolake reprocess``) runs the same class over a whole clip through
:func:`streaming.segments.find_utterances`, with these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from features.pcm import SAMPLE_RATE_HZ

DEFAULT_THRESHOLD_ON = 0.5
DEFAULT_THRESHOLD_OFF = 0.35
DEFAULT_MIN_SPEECH_MS = 64
"""Speech must hold this long (two 32-ms VAD windows) before an utterance starts."""
DEFAULT_ENDPOINTING_MS = 300
"""Silence (ms) that ends an utterance unless the client asks for another gap."""
DEFAULT_MAX_UTTERANCE_MS = 10_000


@dataclass(frozen=True)
class EndpointEvent:
    """``start``: speech began at ``sample``; ``end``: speech ended at ``sample``.

    ``reason`` for an end: ``silence`` (the endpointing gap), ``max_duration`` (the utterance
    reached its length limit), or the reason given to :meth:`Endpointer.force_end`.
    """

    kind: Literal["start", "end"]
    sample: int
    reason: str = ""


class Endpointer:
    """Speech start/end detector for one stream (feed windows in order)."""

    def __init__(
        self,
        endpointing_ms: int | None,
        *,
        threshold_on: float = DEFAULT_THRESHOLD_ON,
        threshold_off: float = DEFAULT_THRESHOLD_OFF,
        min_speech_ms: int = DEFAULT_MIN_SPEECH_MS,
        max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_MS,
    ) -> None:
        if not 0.0 < threshold_off <= threshold_on < 1.0:
            raise ValueError("need 0 < threshold_off <= threshold_on < 1")
        self.threshold_on = threshold_on
        self.threshold_off = threshold_off
        self.min_speech_samples = min_speech_ms * SAMPLE_RATE_HZ // 1000
        self.silence_samples = (
            None if endpointing_ms is None else endpointing_ms * SAMPLE_RATE_HZ // 1000
        )
        self.max_utterance_samples = max_utterance_ms * SAMPLE_RATE_HZ // 1000
        self.in_speech = False
        self.speech_start = 0
        self.speech_end = 0
        """Last sample that was speech (end of the last window at or above threshold_off)."""
        self._candidate_start: int | None = None
        self._silence_since: int | None = None

    def push(self, probability: float, window_start: int, window_end: int) -> EndpointEvent | None:
        """Feed one window's probability; return the event it triggers, if any."""
        if not self.in_speech:
            if probability >= self.threshold_on:
                if self._candidate_start is None:
                    self._candidate_start = window_start
                if window_end - self._candidate_start >= self.min_speech_samples:
                    self.in_speech = True
                    self.speech_start = self._candidate_start
                    self.speech_end = window_end
                    self._candidate_start = None
                    self._silence_since = None
                    return EndpointEvent("start", self.speech_start)
            elif probability < self.threshold_off:
                self._candidate_start = None
            return None
        if probability >= self.threshold_off:
            self.speech_end = window_end
            self._silence_since = None
        elif self._silence_since is None:
            self._silence_since = window_start
        if (
            self.silence_samples is not None
            and self._silence_since is not None
            and window_end - self._silence_since >= self.silence_samples
        ):
            return self._end("silence")
        if window_end - self.speech_start >= self.max_utterance_samples:
            return self._end("max_duration", at=window_end)
        return None

    def force_end(self, reason: str, at: int | None = None) -> EndpointEvent | None:
        """End the open utterance now (Finalize, CloseStream); None when not in speech."""
        self._candidate_start = None
        if not self.in_speech:
            return None
        return self._end(reason, at=at)

    def _end(self, reason: str, at: int | None = None) -> EndpointEvent:
        self.in_speech = False
        self._silence_since = None
        if at is not None:
            self.speech_end = max(self.speech_end, at)
        return EndpointEvent("end", self.speech_end, reason)
