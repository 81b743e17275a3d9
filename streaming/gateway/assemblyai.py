"""AssemblyAI's v3 streaming dialect (``/v3/ws``) over the same session core.

An AssemblyAI client (its SDK's ``StreamingClient`` with ``api_host="ws://HOST:PORT"``) gets
the same sessions, spool, VAD and classifier as a ``/v1/listen`` client; only the words on the
wire differ. Outgoing messages are translated here (:func:`translate`); what AssemblyAI has no
word for (``Ack``, ``UtteranceEnd``, ``Warning``) is not sent. Incoming control messages map
onto Sonolake's (:data:`CLIENT_MESSAGES`). A turn is an utterance: its transcript is the
keyword label (as in the Deepgram dialect), ``end_of_turn`` marks the final result, and times
are integer milliseconds on the stream clock.
"""

from __future__ import annotations

import time
from typing import Any

ASSEMBLYAI_PATH = "/v3/ws"
SESSION_LIFETIME_S = 3 * 3600
"""``Begin.expires_at``: the gateway sets no hard limit; this is a nominal horizon."""
CLIENT_MESSAGES = {
    "Terminate": "CloseStream",
    "ForceEndpoint": "Finalize",
    "KeepAlive": "KeepAlive",
    "UpdateConfiguration": "KeepAlive",
}
"""AssemblyAI control message → the Sonolake message it acts as (configuration is ignored)."""
ENCODINGS = {"pcm_s16le": "linear16", "pcm_mulaw": "mulaw", "ogg_opus": "opus"}
"""AssemblyAI ``encoding`` → Sonolake's."""


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _turn(result: dict[str, Any]) -> dict[str, Any]:
    best = result["channel"]["alternatives"][0]
    final = bool(result["is_final"])
    return {
        "type": "Turn",
        "turn_order": int(result["utterance"]) - 1,
        "turn_is_formatted": final,
        "end_of_turn": final,
        "transcript": best["transcript"],
        "end_of_turn_confidence": float(best["confidence"]) if final else 0.0,
        "words": [
            {
                "start": _ms(word["start"]),
                "end": _ms(word["end"]),
                "confidence": word["confidence"],
                "text": word["word"],
                "word_is_final": final,
            }
            for word in best["words"]
        ],
        "label": result.get("label"),
        "score": result.get("score"),
        "model_version": result.get("model_version"),
    }


def translate(message: dict[str, Any]) -> dict[str, Any] | None:
    """A ``/v1/listen`` server message in AssemblyAI's words, or None when it has none."""
    kind = message.get("type")
    if kind == "Results":
        return _turn(message)
    if kind == "SpeechStarted":
        return {"type": "SpeechStarted", "timestamp": _ms(message["timestamp"])}
    if kind == "Metadata" and message.get("final"):
        return {
            "type": "Termination",
            "audio_duration_seconds": int(message.get("duration", 0)),
            "session_duration_seconds": int(message.get("duration", 0)),
        }
    if kind == "Metadata":
        return {
            "type": "Begin",
            "id": message["session_id"],
            "expires_at": int(time.time()) + SESSION_LIFETIME_S,
        }
    if kind == "Error":
        return {"type": "Error", "error": f"{message['code']}: {message['message']}"}
    return None
