"""OIP v2 gRPC for ``edgeml serve``: the agent's gRPC service, each call answered by a replica.

Ray Serve's own gRPC proxy does not fit: in Ray 2.60 it (and every replica, under direct
ingress) listens on all interfaces (``[::]``, no host option), and with more than one
application on the cluster it routes only calls carrying an ``application`` metadata key,
which OIP clients do not send. So the front is the agent's
:class:`~edgeml.agent.grpc.GrpcServer` (the same decoding, status codes and message limit),
run in the process that deployed, on the host and port it is given. Its backend forwards
each call through the deployment's handle to a replica
(:meth:`~edgeml.serve.replica.ModelReplica.oip_grpc`), whose
:class:`~edgeml.agent.server.Serving` answers it as the agent's gRPC does: validation, model
run, metrics (``protocol="grpc"``, with the replica label) and telemetry. The handle
balances calls over the replicas and reports its queue to Serve's autoscaler.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from edgeml.agent.grpc import GrpcServer
from edgeml.agent.server import Answer

__all__ = ["HandleBackend", "grpc_front"]

log = logging.getLogger("edgeml.serve")


def _error(status: int, message: str) -> Answer:
    return Answer(status, orjson.dumps({"error": message}))


class HandleBackend:
    """A :class:`~edgeml.agent.grpc.Backend` whose answers come from the replicas of app ``app``.

    The app's handle is taken at the first call, so the front can bind its port before the
    app is deployed; until it is, calls are answered UNAVAILABLE (and ServerReady false).
    """

    def __init__(self, app: str, *, timeout_s: float = 30.0) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self._handle: Any = None

    def _ask(self, call: str, *args: Any) -> Answer:
        import ray
        from ray import serve
        from ray.exceptions import RayTaskError

        if not ray.is_initialized():  # serve would start a Ray of its own here
            return _error(503, f"{self.app} is not deployed yet")
        try:
            if self._handle is None:  # threads racing here each take an equal handle: harmless
                self._handle = serve.get_app_handle(self.app).options(method_name="oip_grpc")
            answer: Answer = self._handle.remote(call, *args).result(timeout_s=self.timeout_s)
        except RayTaskError as exc:  # the replica's own code raised: a fault here, not the caller's
            log.error("%s: a replica failed answering %s", self.app, call, exc_info=exc)
            return _error(500, f"the replica failed: {type(exc.cause).__name__}")
        except Exception as exc:  # no replica answered in time, or none runs (Ray's error types vary)
            log.warning("%s: no replica answered %s: %s", self.app, call, exc)
            return _error(503, f"{self.app}: no replica answered ({type(exc).__name__}: {str(exc)[:200]})")
        return answer

    def ready(self) -> Answer:
        return self._ask("ready")

    def model_ready(self, name: str, version: str | None = None) -> Answer:
        return self._ask("model_ready", name, version)

    def server_metadata(self) -> Answer:
        return self._ask("server_metadata")

    def model_metadata(self, name: str, version: str | None = None) -> Answer:
        return self._ask("model_metadata", name, version)

    def infer_grpc(self, request: Any) -> Answer:
        return self._ask("infer_grpc", request.SerializeToString())


def grpc_front(
    app: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_bytes: int = 1 << 20,
    workers: int = 16,
    timeout_s: float = 30.0,
) -> GrpcServer:
    """``inference.GRPCInferenceService`` for app ``app``, bound to ``host:port`` (0: any free port).

    Not started: the caller starts it (:meth:`~edgeml.agent.grpc.GrpcServer.start`) and stops
    it before removing the deployment. ``workers`` threads each wait on one call a replica is
    answering. Raises ``OSError`` naming the address when it cannot be bound.
    """
    return GrpcServer(
        HandleBackend(app, timeout_s=timeout_s),
        host=host,
        port=port,
        max_message_bytes=max_message_bytes,
        workers=workers,
    )
