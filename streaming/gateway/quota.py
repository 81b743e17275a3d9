"""The audio rate limit: a token bucket counted in seconds of audio.

Each session may send audio at ``rate`` audio-seconds per wall-clock second on average, and
up to ``burst`` audio-seconds at once. The bucket starts full and refills while the device is
away, so a device that reconnects after an outage can resend (catch up on) up to ``burst``
seconds straight away; a client that streams faster than ``rate`` for longer is slowed down:
the gateway stops reading its socket until the bucket has room (TCP pushes back), so nothing
is refused or lost. A frame costs at least :data:`MIN_FRAME_CHARGE_S`, so a flood of tiny
frames is bounded too (it is frames, not samples, that cost spool rows).
"""

from __future__ import annotations

import time

MIN_FRAME_CHARGE_S = 0.02
"""Least audio-seconds a frame is charged (20 ms): 2,000 two-byte frames cost 40 s."""


class AudioBucket:
    """Token bucket in audio-seconds; :meth:`take` says how long to wait (seconds) first."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._at = time.monotonic()

    def take(self, audio_s: float) -> float:
        """Charge one frame of ``audio_s`` seconds; return the wait (s) before reading on."""
        now = time.monotonic()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        self._level -= max(audio_s, MIN_FRAME_CHARGE_S)
        return 0.0 if self._level >= 0 else -self._level / self.rate
