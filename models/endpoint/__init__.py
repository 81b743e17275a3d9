"""The inference endpoint: the served model over the Open Inference Protocol (KServe v2).

``sonolake serve`` runs :class:`~models.endpoint.server.EndpointServer`: KServe's model server
components (its FastAPI app and error answers, its gRPC servicer and status mapping, its data
plane) around one KServe model, :class:`~models.endpoint.model.AudioEventClassifier`, whose
versions are :class:`models.serving.ServingEngine` instances that follow the registry's aliases
(:mod:`models.endpoint.versions`). Tensor names and shapes are in :mod:`models.endpoint.tensors`;
the gateway's client for a remote endpoint is :mod:`models.remote_engine` (outside this
package: it must not import KServe).

KServe parses ``sys.argv`` when it is first imported (its ``model_server`` module builds an
argparse parser at import time and accepts abbreviations of its own flags), so the first import
happens here with the process's own flags hidden from it: a flag meant for ``sonolake`` or
pytest can never be read as one of KServe's.
"""

from __future__ import annotations

import sys

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve  # noqa: F401  (first import: see the module docstring)
finally:
    sys.argv = _argv
    del _argv
