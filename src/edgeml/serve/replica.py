"""One Ray Serve replica: the agent's serving code over a channel the replica follows itself.

Each replica is, to the fleet, one more device (``ServeConfig.device_id``): it runs the
agent's :class:`~edgeml.agent.sync.Syncer` in a state folder of its own, so it verifies
the channel pointer (key ring, signature, expiry, serial), fetches and verifies the bundle,
smoke-tests and warms the model exactly as a device does before serving it, and keeps
following the channel on a background thread. A new version is swapped into the replica's
:class:`~edgeml.agent.model.ModelHolder` by one assignment, so no request fails and each
is answered wholly by one version: the swap needs no replica restart and no controller.

HTTP is the agent's own Starlette app (same routes, limits, validation and error answers);
its inference requests go through ``serve.batch``, which hands concurrent requests to
:meth:`~edgeml.agent.server.Serving.answer_batch` to run their rows through the model
together. ``/metrics`` is the agent's metrics with a ``replica`` label added, and
``/serve/status`` tells what the replica serves and how its batches have gone.

OIP v2 gRPC is answered by the same ``Serving``, as the agent's gRPC answers: on a port of the
replica's own when ``ServeConfig.grpc_host`` is set (the agent's gRPC server in the replica,
the fast path, as direct ingress is for HTTP; ``/serve/status`` gives its address), and for
the front on the port ``edgeml serve --grpc-port`` names, through the replica's handle
(:meth:`ModelReplica.oip_grpc`, asked by :mod:`edgeml.serve.grpcfront`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Metric, generate_latest
from ray import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from edgeml.agent.server import Answer, Call, Serving, create_app
from edgeml.observability import REGISTRY
from edgeml.serve.config import ServeConfig, follow

__all__ = ["ModelReplica"]

log = logging.getLogger("edgeml.serve")

#: gRPC inference requests above this are answered on a worker thread, as the agent's REST
#: answers big bodies, so a big batch does not stall the replica's event loop
_INLINE_BYTES = 16 << 10


class _WithReplicaLabel:
    """edgeml's metrics, each sample labelled with the replica that counted it."""

    def __init__(self, replica: str) -> None:
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "replica": self.replica})
                for sample in family.samples
            ]
            yield labelled


@serve.deployment
@serve.ingress()
class ModelReplica:
    """See the module docstring. Built by :func:`edgeml.serve.deploy.build_app`."""

    def __init__(self, config: ServeConfig) -> None:
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.folder = config.state_dir / self.replica
        self.holder, self.syncer = follow(config, self.folder)
        self.syncer.start()
        self._app = create_app(
            self.holder,
            max_body_bytes=config.max_body_bytes,
            max_rows=config.max_rows,
            batch=self._answer,
            metrics_text=self._metrics_text,
        )
        self._app.add_route("/serve/status", self._status, methods=["GET"])
        self.serving: Serving = self._app.state.serving
        self.batch_sizes: Counter[int] = Counter()
        batcher: Any = self._answer  # serve.batch's setters are not in its type
        batcher.set_max_batch_size(config.serving.max_batch_size)
        batcher.set_batch_wait_timeout_s(config.serving.batch_wait_timeout_s)
        self._metrics = CollectorRegistry(auto_describe=False)
        self._metrics.register(_WithReplicaLabel(self.replica))
        self.grpc: Any = None
        if config.grpc_host is not None:
            from edgeml.agent.grpc import GrpcServer

            self.grpc = GrpcServer(
                self.serving, host=config.grpc_host, port=0, max_message_bytes=config.max_body_bytes
            )
            self.grpc.start()
        log.info("replica %s: %s", self.replica, self.syncer.last_outcome)

    def __serve_build_asgi_app__(self) -> Starlette:
        return self._app

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0005)  # the spec's limits are set per replica
    async def _answer(self, calls: list[Call]) -> list[Answer]:
        self.batch_sizes[len(calls)] += 1
        return self.serving.answer_batch(calls)

    async def oip_grpc(self, call: str, *args: Any) -> Answer:
        """One question of the gRPC front (:class:`~edgeml.serve.grpcfront.HandleBackend`), answered here.

        ``call`` names the :class:`~edgeml.agent.grpc.Backend` method; ``infer_grpc`` comes
        with the serialized ``ModelInferRequest``.
        """
        serving = self.serving
        if call == "infer_grpc":
            from edgeml.agent.grpc.grpc_predict_v2_pb2 import ModelInferRequest

            (payload,) = args
            request = ModelInferRequest.FromString(payload)
            if len(payload) > _INLINE_BYTES:
                return await asyncio.to_thread(serving.infer_grpc, request)
            return serving.infer_grpc(request)
        if call == "ready":
            return serving.ready()
        if call == "server_metadata":
            return serving.server_metadata()
        if call == "model_ready":
            return serving.model_ready(*args)
        if call == "model_metadata":
            return serving.model_metadata(*args)
        raise ValueError(f"no gRPC call {call!r}")

    def _grpc_address(self) -> str | None:
        """Where clients reach this replica's gRPC: on all interfaces, by the node's address."""
        if self.grpc is None:
            return None
        if self.grpc.address.startswith(("0.0.0.0:", "[::]:")):
            import ray

            return f"{ray.util.get_node_ip_address()}:{self.grpc.port}"  # type: ignore[no-untyped-call]
        address: str = self.grpc.address
        return address

    def _metrics_text(self) -> bytes:
        return generate_latest(self._metrics)

    async def _status(self, _: Request) -> JSONResponse:
        status: dict[str, Any] = dict(self.syncer.status())
        status |= {
            "replica": self.replica,
            "grpc": self._grpc_address(),
            # batch size -> batches of that size, since the replica started
            "batch_sizes": {str(size): n for size, n in sorted(self.batch_sizes.items())},
        }
        return JSONResponse(status)

    def __del__(self) -> None:
        """Ray Serve calls this when it stops the replica: stop following, drop the bundles."""
        grpc = getattr(self, "grpc", None)
        if grpc is not None:
            grpc.stop()
        syncer = getattr(self, "syncer", None)
        if syncer is not None:
            syncer.stop()
            shutil.rmtree(self.folder, ignore_errors=True)
