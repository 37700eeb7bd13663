"""One real deployment for the module: a local Ray (2 CPUs), Ray Serve on 127.0.0.1, a signed channel."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent.conftest import Publisher
from edgeml.bundle.keys import KeyRing, export_public, init_keys, load_signer
from edgeml.profiles import get_profile
from edgeml.serve import Deployed, ServeConfig, deploy, public_keys
from edgeml.settings import StoreSettings
from edgeml.spec.models import Serving
from edgeml.store.local import LocalStore
from raycluster import start_local_ray

MAX_BODY = 4096
MAX_ROWS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    publisher: Publisher
    config: ServeConfig
    deployed: Deployed

    @property
    def url(self) -> str:
        """The one replica's own URL (direct ingress)."""
        assert len(self.deployed.replica_urls) == 1, self.deployed.replica_urls
        return self.deployed.replica_urls[0]


@pytest.fixture(scope="package")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Publisher:
    """The test model's v1 published on `stable`, as the agent tests publish it (no training)."""
    root = tmp_path_factory.mktemp("serve")
    init_keys(root / "publisher")
    export_public(root / "publisher", root / "keyring")
    publisher = Publisher(
        LocalStore(root / "store"),
        load_signer(root / "publisher"),
        root / "publisher",
        root / "keyring",
        root / "work",
    )
    publisher.release(1)
    return publisher


@pytest.fixture(scope="package")
def served(publisher: Publisher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The channel deployed with `edgeml serve`'s code on a local Ray, shut down afterwards."""
    import ray
    from ray import serve

    config = ServeConfig(
        model=publisher.model,
        channel="stable",
        profile=get_profile("x86-64-generic"),
        store=StoreSettings(url=publisher.store.url),
        keys=public_keys(KeyRing.from_dir(publisher.ring)),
        state_dir=tmp_path_factory.mktemp("replicas"),
        poll_interval_s=0.2,
        health_window_s=0,
        max_body_bytes=MAX_BODY,
        max_rows=MAX_ROWS,
        grpc_host="127.0.0.1",  # each replica serves gRPC on a port of its own too
        # one replica: the 2 cores are shared with other test runs
        serving=Serving(max_batch_size=16, batch_wait_timeout_s=0.002, min_replicas=1, max_replicas=1),
    )
    if ray.is_initialized():  # another module's Ray, still up in this process: Serve needs its own
        ray.shutdown()
    start_local_ray()
    try:
        yield Served(publisher, config, deploy(config, host="127.0.0.1", port=free_port(), num_cpus=1))
    finally:
        serve.shutdown()
        ray.shutdown()
