"""What each replica of an ``edgeml serve`` deployment needs to follow a channel, and its first sync."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgeml.agent.config import AgentConfig, SyncConfig
from edgeml.agent.model import ModelHolder
from edgeml.agent.sync import HealthWatch, Syncer
from edgeml.bundle.keys import KeyRing
from edgeml.errors import UserError
from edgeml.profiles import FirmwareProfile
from edgeml.settings import StoreSettings
from edgeml.spec.models import Serving
from edgeml.spec.types import Slug
from edgeml.store import open_store

__all__ = ["ServeConfig", "follow", "public_keys"]


class ServeConfig(BaseModel):
    """One served model: where its channel is, how replicas check it, and the serving limits.

    Replicas may run on other nodes than the one ``edgeml serve`` ran on, so the key ring and
    the firmware profile travel inside the config instead of as paths to files.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Slug = Field(description="registered model to serve")
    channel: str = Field(description="channel whose pointer the replicas follow")
    profile: FirmwareProfile = Field(description="firmware profile: which bundle, runtime threads")
    device_id: Slug = Field(
        "ray-serve", description="the deployment's name in the fleet: decides its canary cohort"
    )
    group: Slug | None = Field(None, description="device group, for rollouts that target groups")
    store: StoreSettings = Field(description="the object store bundles are on (url set)")
    keys: dict[str, bytes] = Field(description="trusted public keys: key id -> PEM")
    state_dir: Path = Field(description="each replica keeps its bundles in a folder of its own under this")
    poll_interval_s: float = Field(10.0, gt=0, description="how often each replica checks the channel")
    health_window_s: float = Field(60.0, ge=0, description="how long a new bundle is on probation")
    max_body_bytes: int = Field(1 << 20, ge=1, description="larger request bodies get 413")
    max_rows: int = Field(1024, ge=1, description="most rows one request may carry")
    grpc_host: str | None = Field(
        None,
        description="when set, each replica also serves OIP v2 gRPC on a port of its own on this host",
    )
    serving: Serving = Field(default_factory=Serving, description="batching and autoscaling")

    def agent_config(self, folder: Path) -> AgentConfig:
        """The agent config one replica runs its syncer with (key ring written under ``folder``)."""
        return AgentConfig(
            device_id=self.device_id,
            group=self.group,
            profile=self.profile.name,
            model=self.model,
            store=self.store,
            keyring=folder / "keyring",
            state_dir=folder,
            sync=SyncConfig(
                interval_s=self.poll_interval_s,
                channels=[self.channel],
                health_window_s=self.health_window_s,
            ),
        )

    def write_keyring(self, folder: Path) -> KeyRing:
        """Write the trusted keys as ``<key id>.pub`` files (what the agent reads) and load them."""
        ring = folder / "keyring"
        ring.mkdir(parents=True, exist_ok=True)
        for key_id, pem in self.keys.items():
            (ring / f"{key_id}.pub").write_bytes(pem)
        return KeyRing.from_dir(ring)


def public_keys(ring: KeyRing) -> dict[str, bytes]:
    """A key ring as PEM bytes per key id, to ship to replicas."""
    from cryptography.hazmat.primitives import serialization

    return {
        key_id: key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for key_id, key in ring.keys.items()
    }


def follow(config: ServeConfig, folder: Path) -> tuple[ModelHolder, Syncer]:
    """A holder serving the channel's bundle, and the agent's syncer (not started) that keeps it current.

    The first sync runs every check a device runs; when it leaves nothing to serve, the
    folder is removed and :class:`~edgeml.errors.UserError` says why.
    """
    holder = ModelHolder()
    health = HealthWatch()
    holder.watch(health)
    syncer = Syncer(
        config.agent_config(folder),
        config.profile,
        open_store(config.store.url or "", config.store.s3),
        config.write_keyring(folder),
        holder,
        health,
    )
    outcome = syncer.run_once()
    if holder.current is None:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"nothing to serve for {config.model} on channel {config.channel}: {outcome}")
    return holder, syncer
