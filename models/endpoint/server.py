"""The endpoint server: KServe's REST and gRPC servers around :class:`AudioEventClassifier`.

KServe 0.21 speaks the Open Inference Protocol but answers every ``/versions/{v}`` route with
501 "Model versioning not supported yet" and its gRPC servicer ignores ``version``. So this
module keeps KServe's parts — the FastAPI app, its error answers (400 bad input, 404 unknown
model, 503 not ready), the data plane, the gRPC servicer and its exception → status mapping —
and adds versions where KServe stops:

- :class:`VersionedDataPlane` lists the loaded versions in model metadata;
- :class:`VersionedEndpoints` serves ``/v2/models/{name}/versions/{v}[/ready|/infer]``
  (registered before KServe's routes, so they answer first);
- :class:`VersionedServicer` honours ``version`` in gRPC ``ModelReady`` and ``ModelMetadata``
  (``ModelInfer`` already carries ``model_version`` into the request).

:class:`EndpointServer` binds both ports itself (a port in use is a clear error, and port 0
works), runs uvicorn and grpc.aio on one event loop — so HTTP and gRPC callers share the
engines' micro-batchers — and follows the registry. KServe's ``ModelServer`` is not used: it
binds 0.0.0.0 and [::] unconditionally and installs its own signal handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from concurrent import futures
from typing import Any

from fastapi import FastAPI
from fastapi.requests import Request
from fastapi.responses import Response
from grpc import aio
from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH, PredictorProtocol
from kserve.errors import ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v2_datamodels import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
)
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from prometheus_client import REGISTRY

from models.endpoint.metrics import VersionsCollector
from models.endpoint.model import AudioEventClassifier

log = logging.getLogger(__name__)

KSERVE_APP = "kserve.model_server:app"
GRPC_THREADS = 4


class VersionedDataPlane(DataPlane):
    """KServe's data plane, with the loaded versions in model metadata."""

    def classifier(self, name: str) -> AudioEventClassifier:
        model = self.get_model_from_registry(name)  # ModelNotFound when unknown
        assert isinstance(model, AudioEventClassifier)
        return model

    async def model_metadata(self, model_name: str, model_version: str | None = None) -> dict:
        model = self.classifier(model_name)
        if model_version:
            model.version_ready(model_version)
        metadata = await super().model_metadata(model_name)
        metadata["versions"] = model.versions.loaded_versions()
        return metadata


class VersionedEndpoints(V2Endpoints):
    """KServe's v2 REST handlers with ``model_version`` honoured instead of refused."""

    dataplane: VersionedDataPlane

    async def model_metadata(
        self, model_name: str, model_version: str | None = None
    ) -> ModelMetadataResponse:
        metadata = await self.dataplane.model_metadata(model_name, model_version)
        return ModelMetadataResponse.model_validate(metadata)

    async def model_ready(
        self, model_name: str, model_version: str | None = None
    ) -> ModelReadyResponse:
        model = self.dataplane.classifier(model_name)
        ready = model.version_ready(model_version) if model_version else await model.healthy()
        if not ready:
            raise ModelNotReady(model_name)
        return ModelReadyResponse.model_validate({"name": model_name, "ready": True})

    async def infer(
        self,
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        request_body: InferenceRequest | bytes,
        model_version: str | None = None,
    ) -> InferenceResponse | Response:
        model = self.dataplane.classifier(model_name)
        model.check_version(model_version)  # 404 unknown version, 503 no champion yet
        headers = dict(raw_request.headers)
        request, _ = self.dataplane.decode(
            request_body,
            headers,
            protocol_version=PredictorProtocol.REST_V2.value,
            model_name=model_name,
        )
        request.model_version = model_version
        result, response_headers = await self.dataplane.infer(model_name, request, headers)
        body, encoded_headers = self.dataplane.encode(model_name, result, headers, {})
        response_headers.update(encoded_headers)
        for name in ("content-length", "content-type"):
            response_headers.pop(name, None)
        raw_response.headers.update(response_headers)
        if isinstance(body, bytes):
            raw_response.status_code = 200
            raw_response.body = body
            return raw_response
        return InferenceResponse.model_validate(body)


def register_version_routes(app: FastAPI, endpoints: VersionedEndpoints) -> None:
    """The routes KServe refuses (501) and the metadata route, ours first."""
    prefix = "/v2/models/{model_name}"
    app.add_api_route(
        prefix,
        endpoints.model_metadata,
        response_model=ModelMetadataResponse,
        methods=["GET"],
    )
    app.add_api_route(
        prefix + "/versions/{model_version}",
        endpoints.model_metadata,
        response_model=ModelMetadataResponse,
        methods=["GET"],
    )
    app.add_api_route(
        prefix + "/versions/{model_version}/ready",
        endpoints.model_ready,
        response_model=ModelReadyResponse,
        methods=["GET"],
    )
    app.add_api_route(
        prefix + "/versions/{model_version}/infer",
        endpoints.infer,
        response_model=None,
        methods=["POST"],
    )


class VersionedRESTServer(RESTServer):
    """KServe's REST server, with :func:`register_version_routes` ahead of KServe's routes."""

    def _register_endpoints(self, app: FastAPI) -> None:
        register_version_routes(
            app, VersionedEndpoints(self.dataplane, self.model_repository_extension)
        )
        super()._register_endpoints(app)


class VersionedServicer(InferenceServicer):
    """KServe's gRPC servicer, honouring ``version`` in ModelReady and ModelMetadata."""

    _data_plane: VersionedDataPlane

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        model = self._data_plane.classifier(request.name)
        if request.version:
            return pb.ModelReadyResponse(ready=model.version_ready(request.version))
        return pb.ModelReadyResponse(ready=await model.healthy())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        metadata = await self._data_plane.model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=metadata["inputs"],
            outputs=metadata["outputs"],
        )


def quiet_request_logs() -> None:
    """No log line per request: uvicorn's access log and KServe's per-request timing lines
    would cost more than a batch-1 inference (errors are still logged)."""
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port); OSError when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class EndpointServer:
    """HTTP and gRPC Open Inference Protocol servers for one model; ``await serve()``.

    ``http_port``/``grpc_port`` 0 pick free ports; the bound ones are ``self.http_port`` and
    ``self.grpc_port`` once :meth:`start` returns. ``poll_interval_s`` is how often the
    registry's aliases are checked (a promotion is served within that time).
    """

    def __init__(
        self,
        model: AudioEventClassifier,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8080,
        grpc_port: int = 8081,
        poll_interval_s: float = 10.0,
        grpc_threads: int = GRPC_THREADS,
    ) -> None:
        self.model = model
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.poll_interval_s = poll_interval_s
        self.grpc_threads = grpc_threads
        repository = ModelRepository()
        repository.update(model)
        self.dataplane = VersionedDataPlane(model_registry=repository)
        self.extension = ModelRepositoryExtension(model_registry=repository)
        self._http_socket: socket.socket | None = None
        self._rest: VersionedRESTServer | None = None
        self._grpc: aio.Server | None = None
        self._follower: asyncio.Task[None] | None = None
        self._collector: VersionsCollector | None = None

    async def start(self) -> None:
        """Load the aliased versions, bind both ports and start gRPC (HTTP starts in serve)."""
        await self.model.versions.refresh()
        self._http_socket = bind(self.host, self.http_port)
        self.http_port = self._http_socket.getsockname()[1]
        self._grpc = aio.server(
            futures.ThreadPoolExecutor(max_workers=self.grpc_threads),
            interceptors=(ExceptionToStatusInterceptor(),),
            options=[
                ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_LENGTH),
                ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_LENGTH),
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            VersionedServicer(self.dataplane, self.extension), self._grpc
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{host}:{self.grpc_port}")
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {host}:{self.grpc_port} (gRPC): {exc}") from None
        await self._grpc.start()
        self._rest = VersionedRESTServer(
            KSERVE_APP, self.dataplane, self.extension, self.http_port, grace_period=5
        )
        quiet_request_logs()
        self._rest.config.host = self.host
        self._follower = asyncio.create_task(self.model.versions.follow(self.poll_interval_s))
        self._collector = VersionsCollector(self.model.versions, self.model.logmel_windows)
        REGISTRY.register(self._collector)  # KServe's /metrics serves the global registry

    async def serve(self) -> None:
        """Start, then serve HTTP until SIGINT/SIGTERM (uvicorn's) or :meth:`stop`; then
        stop gRPC within its grace time and close every engine."""
        if self._rest is None:
            await self.start()
        assert self._rest is not None and self._http_socket is not None
        try:
            self._rest.create_application()
            await self._rest._server.serve(sockets=[self._http_socket])
        finally:
            await self.shutdown()

    def stop(self) -> None:
        """Ask the HTTP server to finish (serve() then shuts everything down)."""
        if self._rest is not None:
            self._rest._server.should_exit = True

    async def shutdown(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        if self._http_socket is not None:
            self._http_socket.close()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
        self.model.versions.close()
