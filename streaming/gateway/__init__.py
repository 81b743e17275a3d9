"""The WebSocket gateway: ``/v1/listen``, ``/healthz``, ``/metrics`` and the browser page.

:mod:`~streaming.gateway.server` accepts connections and owns sessions; the wire protocol is
:mod:`~streaming.gateway.protocol`; per-session state is :mod:`~streaming.gateway.session`;
the shared VAD and result loop is :mod:`~streaming.gateway.processing`.
"""
