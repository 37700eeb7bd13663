"""The device's bundle folder: installed bundles, atomic swaps, recovery after a crash.

::

    state_dir/
      blobs/                 verified blobs by sha256 (downloads resume here)
      staging/.stage-*       bundles being fetched and smoke-tested (same filesystem)
      bundles/<name>/        installed bundles, never modified after the rename
      current -> bundles/…   what serves; replaced by rename(2) of a fresh symlink
      previous -> bundles/…  the last known-good, for rollback
      state.json             last accepted version, pointer serials, refused versions, probation

A swap writes the probation record, renames the verified stage into ``bundles/``, points
``previous`` at the old bundle and ``current`` at the new one; each step is a rename, so
a kill at any moment leaves ``current`` naming a complete bundle. A restart that finds a
probation record whose bundle is current means the new model was live when the agent
died: it goes back to ``previous``, and after two such deaths the version is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeml.bundle.manifest import Manifest

__all__ = ["CRASHES_BEFORE_REFUSAL", "DeviceState", "Installation"]

CRASHES_BEFORE_REFUSAL = 2


@dataclass
class DeviceState:
    last_version: int | None = None
    serials: dict[str, int] = field(default_factory=dict)  # channel -> last pointer serial seen
    refused: list[int] = field(default_factory=list)  # versions that failed a smoke test or health window
    probation: dict[str, Any] | None = None  # a swap being watched: {"version", "bundle", "previous"}
    crashes: dict[str, int] = field(default_factory=dict)  # version -> deaths while it was live on probation


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Installation:
    """One device's bundle folder; see the module docstring."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir
        self.blobs = state_dir / "blobs"
        self.staging = state_dir / "staging"
        self.bundles = state_dir / "bundles"
        for folder in (self.root, self.blobs, self.staging, self.bundles):
            folder.mkdir(parents=True, exist_ok=True)
        self._state_path = state_dir / "state.json"

    # state -------------------------------------------------------------------------

    def load_state(self) -> DeviceState:
        try:
            raw = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return DeviceState()
        return DeviceState(**raw)

    def save_state(self, state: DeviceState) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        with tmp.open("w") as out:
            json.dump(asdict(state), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._state_path)
        _fsync_dir(self.root)

    # links -------------------------------------------------------------------------

    def _link(self, name: str) -> Path:
        return self.root / name

    def folder(self, name: str) -> Path | None:
        """Where ``current`` or ``previous`` points, if anywhere real."""
        link = self._link(name)
        if not link.is_symlink():
            return None
        target = (self.root / os.readlink(link)).resolve()
        return target if target.is_dir() else None

    def point(self, name: str, bundle: Path | None) -> None:
        """Make ``name`` point at ``bundle`` (or remove it), atomically."""
        link = self._link(name)
        if bundle is None:
            link.unlink(missing_ok=True)
        else:
            tmp = self.root / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(bundle.relative_to(self.root))
            os.replace(tmp, link)
        _fsync_dir(self.root)

    # install, recover, clean ---------------------------------------------------------

    def install(self, stage: Path, manifest: Manifest) -> Path:
        """Move a verified stage into ``bundles/`` under a name of its own."""
        base = f"{manifest.model}-{manifest.version}-{manifest.profile}"
        target, n = self.bundles / base, 1
        while target.exists():
            n += 1
            target = self.bundles / f"{base}-{n}"
        for path in stage.iterdir():  # hard links to fsynced blobs, plus the manifest written here
            if path.name.startswith("manifest"):
                with path.open("rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(stage)
        os.rename(stage, target)
        _fsync_dir(self.bundles)
        return target

    def recover(self) -> DeviceState:
        """After a start: drop unfinished stages; undo a swap whose model was live when the agent died."""
        for leftover in self.staging.glob(".stage-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for tmp in self.root.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        state = self.load_state()
        probation = state.probation
        if probation is not None:
            current = self.folder("current")
            if current is not None and current.name == probation["bundle"]:
                previous = self.bundles / probation["previous"] if probation.get("previous") else None
                if previous is not None and previous.is_dir():
                    self.point("current", previous)
                version = str(probation["version"])
                state.crashes[version] = state.crashes.get(version, 0) + 1
                if state.crashes[version] >= CRASHES_BEFORE_REFUSAL:
                    state.refused.append(int(version))
            state.probation = None
            self.save_state(state)
        return state

    def clean(self) -> None:
        """Remove bundles other than current and previous, and blobs neither of them uses."""
        keep = {p for p in (self.folder("current"), self.folder("previous")) if p is not None}
        for bundle in self.bundles.iterdir():
            if bundle.resolve() not in keep:
                shutil.rmtree(bundle, ignore_errors=True)
        used: set[str] = set()
        for bundle in keep:
            try:
                used |= {f["sha256"] for f in json.loads((bundle / "manifest.json").read_bytes())["files"]}
            except (OSError, ValueError, KeyError):
                continue
        for blob in self.blobs.iterdir():
            if blob.name.split(".")[0] not in used and not blob.name.endswith(".part"):
                blob.unlink(missing_ok=True)
