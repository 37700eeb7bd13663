"""The agent's sync: pull, verify, smoke test, swap, probation, rollback, recovery after a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgeml.agent.install import Installation
from edgeml.agent.model import ModelHolder
from edgeml.agent.sync import _COUNT_EVERY, HealthWatch, Syncer
from edgeml.bundle.manifest import blob_key
from edgeml.bundle.rollout import rollback
from edgeml.bundle.verify import verify_folder
from edgeml.profiles import get_profile
from edgeml.store import open_store

from .conftest import DeviceConfig, Publisher, keyring


def make_syncer(publisher: Publisher, config: object) -> Syncer:
    from edgeml.agent.config import AgentConfig

    assert isinstance(config, AgentConfig)
    holder = ModelHolder()
    health = HealthWatch()
    holder.watch(health)
    return Syncer(
        config, get_profile(config.profile), open_store(config.store.url), keyring(publisher), holder, health
    )


def serving(syncer: Syncer) -> int | None:
    return syncer.holder.current.version if syncer.holder.current else None


def test_a_fresh_device_installs_the_stable_bundle(publisher: Publisher, device_config: DeviceConfig) -> None:
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    assert syncer.load_installed() is None
    assert syncer.run_once() == "installed v1 from stable"
    assert serving(syncer) == 1
    install = syncer.install
    current = install.folder("current")
    assert current is not None
    assert verify_folder(current, keyring(publisher)).version == 1
    syncer.run_once()  # the probation window is 0 s: the version becomes the floor
    assert install.load_state().last_version == 1
    assert syncer.run_once() == "up to date: v1"
    assert not list(install.staging.glob(".stage-*"))


def test_an_update_downloads_only_changed_blobs_and_keeps_the_previous(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    from edgeml.observability import BUNDLE_DOWNLOAD_BYTES

    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    syncer.run_once()
    before = BUNDLE_DOWNLOAD_BYTES._value.get()
    publisher.release(2)
    assert syncer.run_once() == "installed v2 from stable"
    manifest = json.loads((syncer.install.folder("current") / "manifest.json").read_bytes())  # type: ignore[operator]
    weights = next(f for f in manifest["files"] if f["path"].endswith(".data"))
    assert BUNDLE_DOWNLOAD_BYTES._value.get() - before == weights["size"]  # the graph blob was cached
    previous = syncer.install.folder("previous")
    assert previous is not None
    assert previous.name.startswith("pump-1-")


def test_a_tampered_bundle_is_refused_and_the_device_keeps_serving(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    syncer.run_once()
    result = publisher.bundle(2)
    weights = next(f for f in result.manifest.files if f.path.endswith(".data"))
    data = bytearray(publisher.store.get(blob_key(weights.sha256)))
    data[10] ^= 1
    publisher.store.put(blob_key(weights.sha256), bytes(data))
    publisher.release(2)  # publishing re-uploads nothing: the stored blob stays corrupt
    outcome = syncer.run_once()
    assert outcome.startswith("rejected: model.onnx.data: content has sha256")
    assert serving(syncer) == 1
    assert not list(syncer.install.staging.glob(".stage-*"))


def test_a_replayed_pointer_is_refused(publisher: Publisher, device_config: DeviceConfig) -> None:
    publisher.release(1)
    key = "channels/pump/stable.json"
    old = publisher.store.get(key), publisher.store.get(key + ".sig")
    syncer = make_syncer(publisher, device_config())
    publisher.release(2)
    syncer.run_once()
    assert serving(syncer) == 2
    publisher.store.put(key, old[0])
    publisher.store.put(key + ".sig", old[1])
    assert "serial 1 is older than 2" in syncer.run_once()
    assert serving(syncer) == 2


def test_an_explicit_rollback_is_followed(publisher: Publisher, device_config: DeviceConfig) -> None:
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    syncer.run_once()
    publisher.release(2)
    syncer.run_once()
    syncer.run_once()
    assert syncer.install.load_state().last_version == 2
    rollback(publisher.store, publisher.signer, "pump", "stable", 1, reason="test")
    assert syncer.run_once() == "installed v1 from stable"
    assert serving(syncer) == 1


def test_canary_reaches_its_group_only(publisher: Publisher, device_config: DeviceConfig) -> None:
    publisher.release(1)
    publisher.release(2, channel="canary", percent=100, groups=["line-a"])
    north = make_syncer(publisher, device_config("dev-a", group="line-a"))
    south = make_syncer(publisher, device_config("dev-b", group="line-b"))
    north.run_once()
    south.run_once()
    assert (serving(north), serving(south)) == (2, 1)


def test_a_bundle_failing_its_golden_samples_is_refused(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    from bundle.conftest import make_manifest, write_model
    from edgeml.bundle.build import publish_bundle
    from edgeml.bundle.rollout import publish

    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    syncer.run_once()
    folder = publisher.work / "bad"
    manifest = make_manifest(write_model(folder, 7), 2)  # golden outputs [[0.0]]: wrong for this model
    publish_bundle(publisher.store, publisher.signer, manifest, folder)
    publish(publisher.store, publisher.signer, "pump", 2, "stable")
    outcome = syncer.run_once()
    assert outcome.startswith("v2 failed its smoke test: output 'variable' differs")
    assert serving(syncer) == 1
    assert 2 in syncer.install.load_state().refused
    assert syncer.run_once() == "v2 was refused on this device; waiting for a newer version"


def test_a_failing_health_window_rolls_back(publisher: Publisher, device_config: DeviceConfig) -> None:
    config = device_config(sync={"interval_s": 0.2, "health_window_s": 3600, "min_requests": 5})
    publisher.release(1)
    syncer = make_syncer(publisher, config)
    syncer.run_once()
    syncer._probation_since = None  # v1 is the known-good starting point
    publisher.release(2)
    syncer.run_once()
    v2 = syncer.holder.current
    assert v2 is not None
    assert v2.version == 2
    for _ in range(4):  # what the server reports when the runtime throws
        syncer.holder.observe_error(v2, "runtime")
    syncer.holder.observe(v2, {}, {}, 0.001)
    syncer.run_once()
    assert serving(syncer) == 1
    assert syncer.install.folder("current").name.startswith("pump-1-")  # type: ignore[union-attr]
    assert 2 in syncer.install.load_state().refused


@pytest.mark.parametrize(
    ("old_ms", "new_ms", "rolled_back"),
    [
        (0.5, 2.5, False),  # 5x, but 2 ms: a busy device's noise, not a regression
        (0.5, 40.0, True),  # 80x and 39.5 ms more
        (20.0, 50.0, False),  # 30 ms more, but within the 3x ratio
        (20.0, 70.0, True),
    ],
)
def test_the_latency_rule_needs_both_the_ratio_and_a_real_rise(
    publisher: Publisher, device_config: DeviceConfig, old_ms: float, new_ms: float, rolled_back: bool
) -> None:
    config = device_config(sync={"interval_s": 0.2, "health_window_s": 3600, "min_requests": 20})
    publisher.release(1)
    syncer = make_syncer(publisher, config)
    syncer.run_once()
    v1 = syncer.holder.current
    assert v1 is not None
    for _ in range(30):
        syncer.holder.observe(v1, {}, {}, old_ms / 1e3)
    syncer._probation_since = None
    publisher.release(2)
    syncer.run_once()
    v2 = syncer.holder.current
    assert v2 is not None
    assert v2.version == 2
    for _ in range(30):
        syncer.holder.observe(v2, {}, {}, new_ms / 1e3)
    syncer.run_once()
    assert serving(syncer) == (1 if rolled_back else 2)
    assert (2 in syncer.install.load_state().refused) == rolled_back


def test_a_crash_while_the_new_model_is_live_goes_back_then_refuses(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    config = device_config(sync={"interval_s": 0.2, "health_window_s": 3600})
    publisher.release(1)
    first = make_syncer(publisher, config)
    first.run_once()
    first._probation_since = None
    state = first.install.load_state()
    state.probation = None
    first.install.save_state(state)
    publisher.release(2)
    for crash in (1, 2):
        agent = make_syncer(publisher, config)
        agent.load_installed()
        assert agent.run_once() == "installed v2 from stable"
        # the agent dies here (no clean shutdown); a new one starts on the same folder
        restarted = make_syncer(publisher, config)
        assert restarted.load_installed() is not None
        assert serving(restarted) == 1, f"after crash {crash} the previous model serves"
    assert 2 in restarted.install.load_state().refused
    assert restarted.run_once() == "v2 was refused on this device; waiting for a newer version"


def test_a_tampered_installed_bundle_falls_back_to_the_previous(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    syncer.run_once()
    syncer.run_once()
    publisher.release(2)
    syncer.run_once()
    current = syncer.install.folder("current")
    assert current is not None
    weights = next(current.glob("*.data"))
    weights.unlink()
    weights.write_bytes(b"\0" * 100)
    restarted = make_syncer(publisher, syncer.config)
    model = restarted.load_installed()
    assert model is not None
    assert model.version == 1


def test_recovery_removes_unfinished_stages(tmp_path: Path) -> None:
    install = Installation(tmp_path / "state")
    (install.staging / ".stage-pump-3-abc").mkdir()
    (install.staging / ".stage-pump-3-abc" / "model.onnx").write_bytes(b"half")
    (install.root / ".current.tmp").symlink_to("bundles/nowhere")
    install.recover()
    assert not list(install.staging.iterdir())
    assert not os.path.lexists(install.root / ".current.tmp")


@pytest.mark.parametrize("name", ["current", "previous"])
def test_links_are_replaced_atomically(tmp_path: Path, name: str) -> None:
    install = Installation(tmp_path / "state")
    a, b = install.bundles / "a", install.bundles / "b"
    a.mkdir()
    b.mkdir()
    install.point(name, a)
    install.point(name, b)
    assert install.folder(name) == b.resolve()
    install.point(name, None)
    assert install.folder(name) is None


def test_the_example_agent_config_is_valid() -> None:
    from edgeml.agent.config import load_agent_config

    root = Path(__file__).resolve().parents[2]
    config = load_agent_config(root / "appliance" / "agent.example.yaml")
    assert config.device_id == "pump-003"
    assert config.mqtt is not None


def test_a_bad_agent_config_names_every_problem(tmp_path: Path) -> None:
    from edgeml.agent.config import load_agent_config
    from edgeml.errors import ConfigError

    path = tmp_path / "agent.yaml"
    path.write_text(
        "device_id: Bad Name\nprofile: x86-64-generic\nmodel: m\nkeyring: k\nstate_dir: s\n"
        "store: {}\nsurprise: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    message = info.value.message
    assert "device_id" in message
    assert "surprise" in message
    path.write_text("device_id: d\nprofile: p\nmodel: m\nkeyring: k\nstate_dir: s\nstore: {}\n")
    with pytest.raises(ConfigError, match=r"store\.url is required"):
        load_agent_config(path)
    path.write_text(
        "device_id: d\nprofile: p\nmodel: m\nkeyring: k\nstate_dir: s\nstore: {url: 'file:///s'}\n"
        "telemetry: {sample_rows: 5000}\n"
    )
    with pytest.raises(ConfigError, match=r"telemetry\.sample_rows: .* less than or equal to 2000"):
        load_agent_config(path)
    path.write_text("device_id: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_agent_config(path)


def test_the_health_watch_builds_no_object_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeml.agent.sync as sync

    built = []

    class Counted(sync._Stats):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            built.append(self)

    monkeypatch.setattr(sync, "_Stats", Counted)
    health = HealthWatch(keep=3)
    holder = ModelHolder()
    holder.watch(health)
    model: Any = SimpleNamespace(version=7)
    for latency in (0.1, 0.2, 0.3, 0.4):
        holder.observe(model, {}, {}, latency)
    holder.observe_error(model, "runtime")
    holder.observe_error(model, "bad-input")  # the caller's fault: not counted
    assert built == []  # handed over, counted when read
    stats = health.stats(7)
    assert (stats.requests, stats.errors, stats.latencies) == (5, 1, [0.1, 0.2, 0.3])
    assert len(built) == 2  # the version's counts, and the copy stats() returns


def test_the_health_watch_counts_answers_in_bulk_as_one_by_one() -> None:
    health = HealthWatch(keep=400)
    holder = ModelHolder()
    holder.watch(health)
    expected: dict[int, list[Any]] = {}  # version -> [requests, errors, latencies]
    for i in range(3 * _COUNT_EVERY + 7):  # several bulk counts, and some answers left over
        model: Any = SimpleNamespace(version=1 + (i // 50) % 3)  # runs of each version in turn
        stats = expected.setdefault(model.version, [0, 0, []])
        if i % 17 == 0:
            holder.observe_error(model, "runtime")
            stats[0] += 1
            stats[1] += 1
        else:
            holder.observe(model, {}, {}, i / 1000)
            stats[0] += 1
            if len(stats[2]) < 400:
                stats[2].append(i / 1000)
        if i == 500:
            health.reset(2)  # what was answered before it goes
            expected[2] = [0, 0, []]
    for version, (requests, errors, latencies) in expected.items():
        found = health.stats(version)
        assert (found.requests, found.errors, found.latencies) == (requests, errors, latencies)
