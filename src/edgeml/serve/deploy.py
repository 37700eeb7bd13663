"""Deploying a channel's model with Ray Serve, on the Ray cluster the caller is connected to.

Requests reach replicas by Ray Serve's *direct ingress*: each replica serves HTTP on a port
of its own (from Ray's 30000-31000 range), so a request costs one HTTP hop into the replica
instead of the default path's hop into Ray's HTTP proxy and a second, over Ray's RPC, into a
replica; the proxy bounds the default path's throughput (``bench/serve.py``). The proxy
still runs on the head node and balances over every replica (for clients that need one
address); with several replicas, a load balancer in front of the replica ports (Ray's
HAProxy ingress, ``RAY_SERVE_ENABLE_HA_PROXY=1``, where haproxy is installed) gives both.
Per-request access logs are off, and replicas run user code on their main event loop
(no thread hop per request).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeml.bundle.manifest import Manifest
from edgeml.errors import EdgemlError, UserError
from edgeml.serve.config import ServeConfig, follow

__all__ = ["DIRECT_INGRESS", "Deployed", "build_app", "check_channel", "deploy", "replica_urls"]

#: for the Serve controller (it allocates the replica ports) and the replicas alike
DIRECT_INGRESS = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # A stopping replica keeps serving this long so outside load balancers can drop it
    # (Ray's default is 30 s, which every scale-down and shutdown would wait for).
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
_REPLICA_ENV = {**DIRECT_INGRESS, "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


@dataclass(frozen=True)
class Deployed:
    """A running deployment: the proxy's URL (balanced over replicas) and each replica's own;
    each replica's own gRPC address when ``ServeConfig.grpc_host`` is set."""

    name: str
    proxy_url: str
    replica_urls: list[str]
    replica_grpc: list[str] = field(default_factory=list)


def check_channel(config: ServeConfig) -> Manifest:
    """Run the first sync a replica will run (every check a device runs) here, before deploying.

    Raises :class:`~edgeml.errors.UserError` (or ``BundleRejected``) with the reason when the
    channel gives nothing to serve, so the user sees it at once rather than in replica logs.
    """
    with tempfile.TemporaryDirectory(prefix="edgeml-serve-check-") as tmp:
        holder, _ = follow(config, Path(tmp) / "check")
        assert holder.current is not None
        return holder.current.manifest


def build_app(config: ServeConfig, *, num_cpus: float = 1.0) -> Any:
    """The Ray Serve application: :class:`~edgeml.serve.replica.ModelReplica` with the spec's limits."""
    from ray.serve.schema import LoggingConfig

    from edgeml.serve.replica import ModelReplica

    serving = config.serving
    # Room for a full batch being answered while the next one gathers, and for autoscaling's target.
    max_ongoing = max(2 * serving.max_batch_size, math.ceil(2 * serving.target_ongoing_requests))
    return ModelReplica.options(  # type: ignore[attr-defined]
        name=config.model,
        max_ongoing_requests=max_ongoing,
        autoscaling_config={
            "min_replicas": serving.min_replicas,
            "initial_replicas": serving.min_replicas,
            "max_replicas": serving.max_replicas,
            "target_ongoing_requests": serving.target_ongoing_requests,
        },
        ray_actor_options={"num_cpus": num_cpus, "runtime_env": {"env_vars": _REPLICA_ENV}},
        logging_config=LoggingConfig(enable_access_log=False, log_level="WARNING"),
    ).bind(config)


def deploy(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: float = 1.0,
    timeout_s: float = 120,
) -> Deployed:
    """Start Ray Serve (direct ingress) on the connected cluster and run the model; its URLs.

    Serve's HTTP options are cluster-wide and set once: when Serve already runs on the
    cluster, its options stay as they are, and they must include direct ingress.
    """
    from ray import serve
    from ray.serve.schema import LoggingConfig

    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": host, "port": port},
        controller_options={"runtime_env": {"env_vars": DIRECT_INGRESS}},
        logging_config=LoggingConfig(enable_access_log=False, log_level="WARNING"),
    )
    root = _root_owner()
    if root not in (None, config.model):
        # OIP paths name the model below the root (/v2/models/...), so the proxy's root and
        # the replicas' own ports serve one app each; Serve refuses a second app at "/".
        raise UserError(
            f"Ray Serve on this cluster already serves {root!r} at /: one model per Serve instance",
            hint=f"stop the `edgeml serve {root}` running there, or serve {config.model} on another Ray",
        )
    try:
        serve.run(build_app(config, num_cpus=num_cpus), name=config.model, route_prefix="/")
    except RuntimeError as exc:  # Ray reports a replica that could not start this way
        raise EdgemlError(f"Ray Serve could not start {config.model}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    urls = replica_urls(config.model, host)
    while len(urls) < config.serving.min_replicas:
        if time.monotonic() > deadline:
            raise EdgemlError(f"{config.model}: replicas did not report their ports within {timeout_s:g} s")
        time.sleep(0.2)
        urls = replica_urls(config.model, host)
    grpc = _replica_grpc(urls, timeout_s) if config.grpc_host is not None else []
    return Deployed(config.model, f"http://{host}:{port}", urls, grpc)


def _replica_grpc(urls: list[str], timeout_s: float) -> list[str]:
    """Each replica's own gRPC address, as its ``/serve/status`` gives it."""
    import httpx

    return sorted(httpx.get(f"{url}/serve/status", timeout=timeout_s).json()["grpc"] for url in urls)


def _root_owner() -> str | None:
    """The app Ray Serve's proxy routes ``/`` to, if any."""
    from ray import serve

    client = serve.context._get_global_client()
    assert client is not None
    apps = client.get_serve_details().get("applications", {})
    return next((name for name, app in apps.items() if app.get("route_prefix") == "/"), None)


def replica_urls(app: str, host: str = "127.0.0.1") -> list[str]:
    """Each running replica's own URL (direct ingress), as Serve's controller lists them."""
    import ray
    from ray import serve

    # The controller's target groups are what Ray's own HAProxy ingress reads; Serve has no
    # public call for them yet. An app with no running replica lists the proxy instead.
    client = serve.context._get_global_client()
    assert client is not None
    groups = client._controller.get_target_groups.remote(app)
    wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    return sorted(
        f"http://{target.ip if wildcard else host}:{target.port}"
        for group in ray.get(groups)
        if group.protocol == "HTTP" and group.app_name == app
        for target in group.targets
        if target.name.startswith("SERVE_REPLICA::")
    )
