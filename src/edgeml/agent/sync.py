"""Keeping a device on the bundle its channel names, and off one that misbehaves.

Each round: read and verify the channel pointers (signature, this device's model and the
channel of the path, expiry, serial), choose the one this device follows (cohort by device
id, group, profile), and when it names another version: fetch and verify the bundle into
staging (its model, version and profile must be the pointer's and the device's; only
missing blobs are downloaded), load it, run its golden samples, warm it up, install it
and swap it in. A ``stable`` pointer to a bundle whose manifest says ``compliance: sox`` is
followed only with a second key's signed approval (:mod:`edgeml.bundle.approval`); without one
the pointer is refused like any other (reason ``unapproved``) and retried each round.

The new model is then on probation: :class:`HealthWatch` counts its runtime errors and
latency, and when the error rate or p99 is out of bounds the agent swaps the previous model
back and refuses that version until a newer one (or an explicit rollback) comes.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

import numpy as np

from edgeml.agent.config import AgentConfig
from edgeml.agent.install import DeviceState, Installation
from edgeml.agent.model import Answered, Failed, GoldenMismatch, LoadedModel, ModelHolder
from edgeml.agent.supervise import Supervisor
from edgeml.bundle.approval import fetch_approval
from edgeml.bundle.channels import ChannelPointer, choose, pointer_key, verify_pointer
from edgeml.bundle.keys import KeyRing, timestamp
from edgeml.bundle.verify import Context, fetch_bundle
from edgeml.errors import BundleRejected, ObjectNotFoundError, StoreError
from edgeml.observability import (
    BUNDLE_DOWNLOAD_BYTES,
    LAST_SYNC,
    track_bundle_verification,
    track_served_model,
    track_swap,
)
from edgeml.profiles import FirmwareProfile
from edgeml.store.base import ObjectStore

__all__ = ["HealthWatch", "Syncer"]

log = logging.getLogger("edgeml.agent")


@dataclass
class _Stats:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def p99(self) -> float | None:
        return float(np.percentile(self.latencies, 99)) if len(self.latencies) >= 10 else None


#: answers a :class:`HealthWatch` holds before counting them in
_COUNT_EVERY = 256


class HealthWatch:
    """Per model version: answered requests, runtime errors, latencies (an observer).

    Entries are handed over with one deque append (atomic, no lock on the serving path) and
    counted in bulk once ``_COUNT_EVERY`` wait and before the counts are read.
    """

    def __init__(self, keep: int = 5000) -> None:
        self._stats: dict[int, _Stats] = {}
        self._keep = keep
        self._lock = threading.Lock()
        self._handed: deque[Answered | Failed] = deque()  # not counted yet
        self.take = self._handed.append

    def poll(self) -> None:
        if len(self._handed) >= _COUNT_EVERY:
            with self._lock:
                self._count_handed()

    def reset(self, version: int) -> None:
        with self._lock:
            self._count_handed()  # answers given before the reset go with the old counts
            self._stats[version] = _Stats()

    def stats(self, version: int) -> _Stats:
        with self._lock:
            self._count_handed()
            found = self._stats.get(version)
            if found is None:
                return _Stats()
            return _Stats(found.requests, found.errors, list(found.latencies))

    def _of(self, version: int) -> _Stats:
        stats = self._stats.get(version)
        if stats is None:  # not setdefault: that would build a _Stats on every call
            stats = self._stats[version] = _Stats()
        return stats

    def _count_handed(self) -> None:
        """Count the entries handed over so far (with the lock held), a run of one model at a time."""
        handed = self._handed
        taken = [handed.popleft() for _ in range(len(handed))]  # appends meanwhile stay
        for model, run in groupby(taken, itemgetter(0)):
            if model is None:
                continue  # failed before any model served: not a model's health
            entries = list(run)
            latencies = [e[3] for e in entries if len(e) == 5]
            # bad input is the caller's fault, not the model's: only runtime failures count
            errors = sum(1 for e in entries if len(e) == 2 and e[1] == "runtime")
            stats = self._of(model.version)
            stats.requests += len(latencies) + errors
            stats.errors += errors
            room = self._keep - len(stats.latencies)
            if room > 0:
                stats.latencies += latencies[:room]


class Syncer:
    """See the module docstring. ``run_once`` is one round; ``start`` runs rounds on a thread."""

    def __init__(
        self,
        config: AgentConfig,
        profile: FirmwareProfile,
        store: ObjectStore,
        ring: KeyRing,
        holder: ModelHolder,
        health: HealthWatch,
    ) -> None:
        self.config = config
        self.profile = profile
        self.store = store
        self.ring = ring
        self.holder = holder
        self.health = health
        self.install = Installation(config.state_dir)
        self.state = DeviceState()
        self._previous: LoadedModel | None = None
        self._probation_since: float | None = None
        self._stop = threading.Event()
        self.supervisor = Supervisor("sync")
        self._next_sync = 0.0
        self.last_outcome = "not started"
        self.last_rejection: dict[str, Any] | None = None  # reason, message, at (unix time)

    # start-up ------------------------------------------------------------------------

    def _open(self, folder: Any) -> LoadedModel:
        return LoadedModel.open(
            folder, self.ring, threads=self.profile.threads, device=self.profile.execution_provider
        )

    def load_installed(self) -> LoadedModel | None:
        """Recover from a crash, then serve the installed bundle (or the previous one) if it verifies."""
        self.state = self.install.recover()
        for name in ("current", "previous"):
            folder = self.install.folder(name)
            if folder is None:
                continue
            try:
                model = self._open(folder)
                self._context(None, "the installed bundle").check(model.manifest)
                model.warm_up()
            except (BundleRejected, OSError, RuntimeError) as exc:  # tampered or broken on disk
                log.warning("installed bundle %s is unusable: %s", folder, exc)
                continue
            if name == "previous":
                self.install.point("current", folder)
            self._serve(model)
            return model
        return None

    def _serve(self, model: LoadedModel) -> None:
        old = self.holder.swap(model)
        track_served_model(_series(model), None if old is None else _series(old))

    # one round -------------------------------------------------------------------------

    def _context(self, version: int | None, source: str) -> Context:
        """What a manifest must be on this device: its model and profile (and the pointer's version)."""
        return Context(self.config.model, version, self.profile.name, source=f"{source} on this device")

    def _pointers(self) -> dict[str, ChannelPointer]:
        """Every channel's pointer, verified for this device's model and that channel.

        A serial is remembered only once its pointer verified, so a pointer that fails (another
        model's, say, copied here) never raises the floor the genuine ones must clear.
        """
        pointers = {}
        for channel in self.config.sync.channels:
            key = pointer_key(self.config.model, channel)
            try:
                data, signature = self.store.get(key), self.store.get(key + ".sig")
            except ObjectNotFoundError:
                continue
            pointer = verify_pointer(
                data,
                signature,
                self.ring,
                last_serial=self.state.serials.get(channel),
                model=self.config.model,
                channel=channel,
            )
            self.state.serials[channel] = pointer.serial
            pointers[channel] = pointer
        return pointers

    def run_once(self) -> str:
        """One sync round; returns what happened, for logs and tests."""
        self._check_probation()
        try:
            outcome = self._sync()
        except BundleRejected as exc:
            track_bundle_verification(exc.reason)
            outcome = f"rejected: {exc.message}"
            self.last_rejection = {"reason": exc.reason, "message": exc.message, "at": time.time()}
            log.error("bundle rejected: %s", exc.message)
        except StoreError as exc:
            outcome = f"store unavailable: {exc.message}"
            log.warning("cannot reach the store: %s", exc.message)
        self.last_outcome = outcome
        return outcome

    def _sync(self) -> str:
        pointers = self._pointers()
        self.install.save_state(self.state)
        LAST_SYNC.set(time.time())
        pointer = choose(pointers, self.config.device_id, self.config.group, self.profile.name)
        if pointer is None:
            return "no channel names a bundle for this device"
        current = self.holder.current
        if current is not None and current.version == pointer.version:
            return f"up to date: v{pointer.version}"
        rollback_to = pointer.rollback.to_version if pointer.rollback else None
        if pointer.version in self.state.refused and rollback_to != pointer.version:
            return f"v{pointer.version} was refused on this device; waiting for a newer version"
        if self._probation_since is not None:
            return "a new model is on probation; the next change waits"
        ref = pointer.manifests[self.profile.name]
        staged = fetch_bundle(
            self.store,
            ref.key,
            self.ring,
            self.install.staging,
            cache=self.install.blobs,
            min_version=self.state.last_version,
            rollback_to=rollback_to,
            context=self._context(pointer.version, f"the {pointer.channel} pointer"),
            sha256=ref.sha256,  # of the bytes fetch_bundle reads, not of an earlier read
        )
        if pointer.channel == "stable" and staged.manifest.compliance == "sox":
            self._check_approval(pointer, staged.path)
        track_bundle_verification("ok")
        BUNDLE_DOWNLOAD_BYTES.inc(staged.downloaded_bytes)
        try:
            model = self._open(staged.path)
            model.smoke_test()
            model.warm_up()
        except Exception as exc:  # any failure to load a signed bundle refuses that version
            shutil.rmtree(staged.path, ignore_errors=True)
            if not isinstance(exc, GoldenMismatch | BundleRejected | RuntimeError | OSError):
                log.error("v%s cannot be loaded", staged.manifest.version, exc_info=exc)
            track_swap("smoke_test_failed")
            self.state.refused.append(staged.manifest.version)
            self.install.save_state(self.state)
            return f"v{staged.manifest.version} failed its smoke test: {exc}"
        self._swap_in(model, staged.path, explicit_rollback=rollback_to == pointer.version)
        return f"installed v{model.version} from {pointer.channel}"

    def _check_approval(self, pointer: ChannelPointer, stage: Any) -> None:
        """Separation of duties: a second key approved exactly these bundles, else BundleRejected.

        The approval must have been unexpired when the publisher acted on it (the pointer's signed
        time), so a device that joins later still follows; a rollback returns to a version
        approved before and checks everything but the expiry.
        """
        at = None if pointer.rollback else timestamp(pointer.created, "pointer created")
        try:
            fetch_approval(self.store, self.ring, pointer, now=at, check_expiry=pointer.rollback is None)
        except BundleRejected:
            shutil.rmtree(stage, ignore_errors=True)
            raise

    def _swap_in(self, model: LoadedModel, stage: Any, *, explicit_rollback: bool) -> None:
        previous = self.install.folder("current")
        folder = self.install.install(stage, model.manifest)
        model.folder = folder  # the runtime loaded every file already; the rename does not touch it
        self.state.probation = {
            "version": model.version,
            "bundle": folder.name,
            "previous": previous.name if previous else None,
        }
        if explicit_rollback and model.version in self.state.refused:
            self.state.refused.remove(model.version)
        self.install.save_state(self.state)
        if previous is not None:
            self.install.point("previous", previous)
        self.install.point("current", folder)
        self.health.reset(model.version)
        self._previous = self.holder.current
        self._serve(model)
        self._probation_since = time.monotonic()
        track_swap("ok")
        log.info("serving %s v%s", model.name, model.version)

    # probation ---------------------------------------------------------------------------

    def _check_probation(self) -> None:
        if self._probation_since is None or self.holder.current is None:
            return
        model = self.holder.current
        stats = self.health.stats(model.version)
        sync = self.config.sync
        failure = None
        if stats.requests >= sync.min_requests:
            if stats.errors / stats.requests > sync.max_error_rate:
                failure = f"error rate {stats.errors / stats.requests:.1%} over {sync.max_error_rate:.1%}"
            old = self.health.stats(self._previous.version) if self._previous else None
            new_p99, old_p99 = stats.p99(), old.p99() if old else None
            # both: a 0.5 ms model at 2.5 ms on a busy device is 5x slower but no regression
            if (
                new_p99
                and old_p99
                and new_p99 > sync.max_p99_ratio * old_p99
                and (new_p99 - old_p99) * 1e3 > sync.min_p99_rise_ms
            ):
                failure = (
                    f"p99 {new_p99 * 1e3:.2f} ms over {sync.max_p99_ratio:g}x the previous "
                    f"{old_p99 * 1e3:.2f} ms"
                )
        if failure is not None:
            self._roll_back(model, failure)
        elif time.monotonic() - self._probation_since >= sync.health_window_s:
            self._probation_since = None
            self.state.probation = None
            # the floor for replays; after an explicit rollback it is the older version, as signed
            self.state.last_version = model.version
            self.install.save_state(self.state)
            self.install.clean()

    def _roll_back(self, model: LoadedModel, reason: str) -> None:
        log.error("v%s failed its health window (%s); rolling back", model.version, reason)
        track_swap("rolled_back")
        previous_folder = self.install.folder("previous")
        if self._previous is not None:
            self._serve(self._previous)
            if previous_folder is not None:
                self.install.point("current", previous_folder)
        self.state.refused.append(model.version)
        self.state.probation = None
        self.install.save_state(self.state)
        self._probation_since = None

    # thread ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run rounds on a supervised thread: a bug in one is logged, counted, and retried later."""
        self._next_sync = 0.0
        self.supervisor.start(self._round, self._stop)

    def _round(self) -> float:
        """A sync when one is due, else a probation check; seconds until the next round."""
        if time.monotonic() >= self._next_sync:
            self.run_once()
            self._next_sync = time.monotonic() + self.config.sync.interval_s
        else:
            self._check_probation()
        return min(1.0, self.config.sync.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self.supervisor.join(timeout=10)

    def status(self) -> Mapping[str, Any]:
        current = self.holder.current
        return {
            "model": current.name if current else None,
            "version": current.version if current else None,
            "on_probation": self._probation_since is not None,
            "last_outcome": self.last_outcome,
            "last_rejection": self.last_rejection,
            "refused": sorted(set(self.state.refused)),
        }


def _series(model: LoadedModel) -> tuple[str, str, str, str]:
    """The model-info series of a served model: name, version, profile, runtime."""
    return model.name, str(model.version), model.manifest.profile, model.manifest.runtime
