"""The Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService`` on the agent.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, answered by
a :class:`Backend`: on the agent, the same :class:`~edgeml.agent.server.Serving` as REST
(``ModelInfer`` decodes the request into the REST request's form,
:func:`edgeml.agent.oip.grpc_request`, then shares REST's validation, model run, metrics
(``protocol="grpc"``) and telemetry); on ``edgeml serve``, a backend that asks a Ray Serve
replica's ``Serving`` the same questions (:mod:`edgeml.serve.grpcfront`). Refusals carry REST's
message with the gRPC code of its HTTP status (422 and 400: INVALID_ARGUMENT, 404: NOT_FOUND,
503: UNAVAILABLE, 500: INTERNAL). Messages over ``max_message_bytes`` are refused by grpcio
itself (RESOURCE_EXHAUSTED) before any of this runs.

The messages come from the published ``grpc_predict_v2.proto`` beside this file (regenerate
with ``make grpc-gen``). ``ModelInfer``'s answer is serialized once, by the shared core, so it
is registered with a pass-through serializer rather than through the generated servicer.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any, Protocol

import grpc
import orjson

from edgeml.agent.grpc import grpc_predict_v2_pb2 as pb
from edgeml.agent.server import Answer

__all__ = ["Backend", "GrpcServer"]

log = logging.getLogger("edgeml.agent")

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _abort(context: grpc.ServicerContext, answer: Answer) -> Any:
    """End the call with the gRPC code and message of an error answer (raises)."""
    message = orjson.loads(answer.body).get("error", "")
    context.abort(_CODES.get(answer.status, grpc.StatusCode.INTERNAL), message)


class Backend(Protocol):
    """What the RPCs ask, answered as REST answers it (:class:`~edgeml.agent.server.Serving` is one).

    Each answer is an HTTP status and its body: JSON, or for a 200 of ``infer_grpc`` the
    serialized ``ModelInferResponse``.
    """

    def ready(self) -> Answer: ...
    def model_ready(self, name: str, version: str | None = None) -> Answer: ...
    def server_metadata(self) -> Answer: ...
    def model_metadata(self, name: str, version: str | None = None) -> Answer: ...
    def infer_grpc(self, request: Any) -> Answer: ...


class _Service:
    """The RPCs, each a method named as in the protocol (hence not snake case)."""

    def __init__(self, serving: Backend) -> None:
        self.serving = serving

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.serving.ready().status == 200)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        answer = self.serving.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=answer.status == 200)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(**orjson.loads(self.serving.server_metadata().body))

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        answer = self.serving.model_metadata(request.name, request.version or None)
        if answer.status != 200:
            return _abort(context, answer)
        return pb.ModelMetadataResponse(**orjson.loads(answer.body))

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> bytes:
        answer = self.serving.infer_grpc(request)
        if answer.status != 200:
            return _abort(context, answer)  # type: ignore[no-any-return]
        return answer.body


def _passthrough(payload: bytes) -> bytes:
    return payload


class GrpcServer:
    """The gRPC service on ``host:port`` (port 0: any free port), answered by ``serving``."""

    def __init__(
        self,
        serving: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = 1 << 20,
        workers: int = 4,
    ) -> None:
        service = _Service(serving)
        messages: list[tuple[str, Any, Any]] = [
            ("ServerLive", pb.ServerLiveRequest, pb.ServerLiveResponse),
            ("ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse),
            ("ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse),
            ("ServerMetadata", pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            ("ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        ]
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(service, name),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, request, response in messages
        }
        handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
            service.ModelInfer,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=_passthrough,
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgeml-grpc"),
            handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a second agent on the same port fails to bind, as HTTP does
            ],
        )
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self._server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise OSError(f"cannot serve gRPC on {bind}: {exc}") from exc
        self._started = False
        #: host:port it serves on (the port bound, when 0 was asked)
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> None:
        self._server.start()
        self._started = True

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop taking calls; calls under way get ``grace_s`` seconds to finish. Frees the port."""
        if not self._started:  # grpcio keeps a bound server's socket until it has been started
            self._server.start()
            grace_s = 0
        self._server.stop(grace_s).wait()
