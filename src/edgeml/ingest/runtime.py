"""Ray for the stages: join a cluster when one is named, else start a local one on loopback.

A local Ray binds 127.0.0.1 only. Ray rewrites a loopback node address to the machine's
network address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the setting Ray itself uses
on laptops); with it, the GCS, raylet, workers and agents all listen on loopback. The
setting is made only while the local Ray starts (its processes inherit it) and put back
afterwards, so a later connection to a real cluster from the same process is unaffected.

A named cluster is probed before ``ray.init``: Ray itself retries an unreachable address
for minutes; the probe fails in seconds with the address and what to check.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from edgeml.errors import UserError

__all__ = [
    "LOOPBACK",
    "check_cluster_address",
    "cluster_cpus",
    "init_ray",
    "ray_session",
    "run_tasks",
]

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: seconds for the TCP connect, then again for the gRPC handshake: well within 30 s together
PROBE_TIMEOUT_S = 5.0
_HINT = (
    "check that the head node runs (`ray status` on it), that the address is its GCS port "
    "(`ray start --head --port`, 6379 by default) or, with ray://, its client server port (10001), "
    "and that no firewall blocks it; without --ray-address / RAY_ADDRESS a local Ray is started"
)


def _host_port(address: str) -> tuple[str, int]:
    target = address.removeprefix("ray://").rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"Ray address {address!r} is not host:port",
            hint="give the head node as host:6379, or ray://host:10001 for Ray Client",
        )
    return host.strip("[]"), int(port)


def check_cluster_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise a :class:`UserError` unless a gRPC server (Ray's GCS or client server) answers at ``address``."""
    if address in ("auto", "local"):  # Ray's own discovery of a cluster on this machine
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UserError(f"cannot reach the Ray cluster at {address}: {reason}", hint=_HINT) from exc
    import grpc  # ships with Ray

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError as exc:
        raise UserError(
            f"{address} accepts connections but does not answer as a Ray cluster (no gRPC handshake "
            f"in {timeout_s:.0f} s)",
            hint=_HINT,
        ) from exc
    finally:
        channel.close()


def init_ray(address: str | None, **kwargs: Any) -> None:
    """``ray.init``: on the cluster at ``address`` (probed first), else a local Ray on loopback."""
    import ray

    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        **kwargs,
    }
    if address and address != "local":
        check_cluster_address(address)
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address}: {exc}", hint=_HINT) from exc
        return
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by the driver when it resolves its node address
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK, **options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = saved_env


@contextmanager
def ray_session(address: str | None, *, progress_bars: bool = True) -> Iterator[None]:
    """Use the running Ray, or connect to ``address``, or start a local Ray for the block.

    Only what this function started is shut down on exit.
    """
    import ray
    from ray.data import DataContext

    started = False
    if not ray.is_initialized():
        init_ray(address, configure_logging=True)
        started = True
    ctx = DataContext.get_current()
    if cluster_cpus() <= 4:
        # Ray Data reserves resources per operator for big clusters; on a few cores that holds the
        # second read/land task back and the work runs on one core (measured in bench/ingest_csv.py).
        ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = progress_bars
    ctx.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def cluster_cpus() -> int:
    """CPUs in the cluster: sizes blocks so every core works, no more (small-cluster friendly)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


def run_tasks(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], **shared: Any) -> list[T]:
    """``[fn(*args, **shared) for args in calls]``: as Ray tasks, round-robin over the nodes, when Ray runs.

    At most two tasks per CPU are in flight, so the driver never holds more than that many
    results it has not collected. Without Ray (a library call, a unit test) the calls run here.
    A :class:`UserError` raised in a task is raised as itself.
    """
    import ray

    if not ray.is_initialized():
        return [fn(*args, **shared) for args in calls]
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # Round-robin over the nodes that have CPUs (soft: a busy or lost node's task goes elsewhere).
    # SPREAD alone left every task of a short stage on one node in the two-node test.
    alive = ray.nodes()  # type: ignore[no-untyped-call]
    nodes = [n["NodeID"] for n in alive if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    remote = ray.remote(fn)
    shared_refs = {k: ray.put(v) for k, v in shared.items()}
    limit = 2 * cluster_cpus()
    results: dict[int, T] = {}
    pending: dict[Any, int] = {}

    def collect(refs: list[Any]) -> None:
        for ref in refs:
            try:
                results[pending.pop(ref)] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, UserError):
                    raise exc.cause from None
                raise

    for i, args in enumerate(calls):
        if len(pending) >= limit:
            done, _ = ray.wait(list(pending), num_returns=1)
            collect(done)
        placed = remote.options(
            num_cpus=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True)
            if nodes
            else "SPREAD",
        )
        pending[placed.remote(*args, **shared_refs)] = i
    collect(list(pending))
    return [results[i] for i in range(len(calls))]
