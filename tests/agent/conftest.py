"""A publisher and a device for agent tests: real bundles on a real store, no training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bundle.conftest import make_manifest, write_model
from edgeml.agent.config import AgentConfig
from edgeml.agent.runtime import ModelRuntime
from edgeml.bundle.build import BuildResult, publish_bundle
from edgeml.bundle.keys import KeyRing, Signer, export_public, init_keys, load_signer
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.store.base import ObjectStore
from edgeml.store.local import LocalStore


def with_golden(manifest: Manifest, folder: Path, inputs: list[dict[str, float]] | None = None) -> Manifest:
    """The manifest with golden outputs computed by the device runtime, as `bundle build` does."""
    golden = manifest.golden.model_copy(
        update={"inputs": inputs or [{"a": 1.0, "b": 2.0}, {"a": -3.0, "b": 0.5}]}
    )
    draft = manifest.model_copy(update={"golden": golden})
    outputs = ModelRuntime(folder, draft).predict_records(golden.inputs)
    return draft.model_copy(
        update={"golden": golden.model_copy(update={"outputs": {k: v.tolist() for k, v in outputs.items()}})}
    )


@dataclass
class Publisher:
    """Builds, signs and publishes bundles of the small test model, and moves channels."""

    store: ObjectStore
    signer: Signer
    home: Path
    ring: Path
    work: Path
    model: str = "pump"

    def bundle(self, version: int, seed: int | None = None, profile: str = "x86-64-generic") -> BuildResult:
        folder = self.work / f"build-{version}-{profile}"
        files = write_model(folder, version if seed is None else seed)
        manifest = with_golden(make_manifest(files, version, model=self.model, profile=profile), folder)
        return publish_bundle(self.store, self.signer, manifest, folder)

    def release(self, version: int, channel: str = "stable", **kwargs: object) -> None:
        self.bundle(version)
        publish_channel(self.store, self.signer, self.model, version, channel, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    home = tmp_path / "publisher"
    init_keys(home)
    ring = tmp_path / "keyring"
    export_public(home, ring)
    return Publisher(LocalStore(tmp_path / "store"), load_signer(home), home, ring, tmp_path / "work")


DeviceConfig = Callable[..., AgentConfig]


@pytest.fixture
def device_config(publisher: Publisher, tmp_path: Path) -> DeviceConfig:
    """device_config(name="dev-1", group=None, **overrides) -> an agent config on the publisher's store."""

    def make(name: str = "dev-1", group: str | None = None, **overrides: object) -> AgentConfig:
        data: dict[str, object] = {
            "device_id": name,
            "group": group,
            "profile": "x86-64-generic",
            "model": publisher.model,
            "store": {"url": publisher.store.url},
            "keyring": str(publisher.ring),
            "state_dir": str(tmp_path / "devices" / name),
            "sync": {"interval_s": 0.2, "health_window_s": 0},
            "http": {"port": 0},
        }
        data.update(overrides)
        return AgentConfig.model_validate(data)

    return make


def keyring(publisher: Publisher) -> KeyRing:
    return KeyRing.from_dir(publisher.ring)
