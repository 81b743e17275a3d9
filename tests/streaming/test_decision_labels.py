"""A client that runs ahead of its results: each spooled decision keeps the label of its audio.

A client that sends each clip and its trailing silence at once, followed at once by the next
clip's ``Label``, has changed the session's label before the gateway's final for the clip. The
decision record
(what lands in ``silver.audio_events`` and ``gold.predictions``) must carry the label its
chunks carried, not the session's label when the result was sent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.corpus import read_manifest, read_wav
from streaming.spool import KIND_UTTERANCE

pytestmark = pytest.mark.integration


def test_decisions_carry_the_label_of_their_audio(make_gateway: Any, shared_data: Path) -> None:
    from websockets.sync.client import connect

    clips = read_manifest(shared_data / "speech_commands" / "manifest.csv")
    words = ("yes", "stop", "left")
    chosen = [next(c for c in clips if c.label == word) for word in words]
    gateway = make_gateway()
    gap = np.zeros(11_200, dtype=np.int16)  # 0.7 s: the endpointer closes each clip
    with connect(gateway.url("device_id=ahead"), open_timeout=10) as ws:
        labels = [clip.label for clip in chosen] + [None]
        ws.send(json.dumps({"type": "Label", "label": labels[0]}))
        for clip, following in zip(chosen, labels[1:], strict=True):
            audio = np.concatenate([read_wav(clip.path)[0], gap])
            for start in range(0, audio.size, 1600):  # as fast as the socket takes it
                ws.send(audio[start : start + 1600].astype("<i2").tobytes())
            # The next clip's Label goes out before this clip's final can have come back.
            ws.send(json.dumps({"type": "Label", "label": following}))
            time.sleep(1.0)  # let live processing catch up (no drops), then the next clip
        ws.send(json.dumps({"type": "CloseStream"}))
        for _ in ws:  # until the server closes after the final Metadata
            pass
    rows = [r for r in gateway.stored().to_pylist() if r["kind"] == KIND_UTTERANCE]
    assert [r["label"] for r in rows] == list(words)
