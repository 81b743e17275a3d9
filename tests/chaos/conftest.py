"""The chaos suite: crashes, full disks, a vanishing object store and hostile input.

Each case has a short variant that ``make test`` runs and a long one marked ``chaos`` (more
kills, more outages, more fuzzing) that only ``make chaos`` (``pytest -m chaos``) runs.
docs/reliability.md ("Chaos suite") records the figures of the long run.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "streaming"), str(TESTS / "sidecar")]  # gateway_support, signals
