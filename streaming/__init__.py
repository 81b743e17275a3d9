"""Live audio in, lake rows out: the gateway, the spool between them, and the sidecar.

Three systems, one subpackage each, so a path says which system a module belongs to:

- :mod:`streaming.gateway` — the WebSocket server: protocol, admission, sessions, live
  processing (VAD, endpointing, results) and the browser page.
- :mod:`streaming.spool` — the durable, append-only segments between them: format, writer
  (the gateway's) and reader (the sidecar's).
- :mod:`streaming.sidecar` — the Apache Beam landing transform and its exactly-once
  micro-batch driver.

Beside them, what more than one of them uses: the VAD (:mod:`streaming.vad`), the segmenter
(:mod:`streaming.endpointing`, :mod:`streaming.segments`) and the device client and replay tool
(:mod:`streaming.replay`).
"""
