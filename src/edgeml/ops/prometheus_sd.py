"""Prometheus file-based service discovery for the fleet's agents.

The central node knows the fleet; Prometheus scrapes each agent's ``/metrics``. The bridge is
one JSON file in Prometheus' ``file_sd_configs`` format, which Prometheus re-reads whenever it
changes::

    [
      {"targets": ["pump-003:8500"], "labels": {"device": "pump-003", "group": "line-a",
                                                "profile": "x86-64-generic"}},
      ...
    ]

One entry per active device, so every series an agent exports carries ``device``, ``group``
and ``profile`` labels: the agent's own metrics have no group label, and the dashboard and
alert rules aggregate by it. A device without a group gets no ``group`` label, as the central
node's own metrics leave it empty.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

__all__ = ["DEFAULT_AGENT_PORT", "FleetDevice", "sd_targets", "write_sd_file"]

#: the agent's default HTTP port (agent.yaml ``http.port``)
DEFAULT_AGENT_PORT = 8500


class FleetDevice(Protocol):
    """What service discovery needs of a registered device (the central node's ``Device`` fits)."""

    @property
    def device_id(self) -> str: ...
    @property
    def group(self) -> str | None: ...
    @property
    def profile(self) -> str: ...
    @property
    def active(self) -> bool: ...


def _by_name(port: int) -> Callable[[FleetDevice], str | None]:
    # On a plant network device ids are host names (the Ansible inventory uses them as such).
    return lambda device: f"{device.device_id}:{port}"


def sd_targets(
    devices: Iterable[FleetDevice],
    *,
    port: int = DEFAULT_AGENT_PORT,
    address: Callable[[FleetDevice], str | None] | None = None,
) -> list[dict[str, object]]:
    """The file_sd entries for ``devices``: active ones with an address, sorted by device id.

    ``address(device)`` gives ``host:port`` to scrape, or None to leave the device out; the
    default is ``<device_id>:<port>``.
    """
    locate = address or _by_name(port)
    entries: list[dict[str, object]] = []
    for device in sorted(devices, key=lambda d: d.device_id):
        target = locate(device) if device.active else None
        if target is None:
            continue
        labels = {"device": device.device_id, "profile": device.profile}
        if device.group:
            labels["group"] = device.group
        entries.append({"targets": [target], "labels": labels})
    return entries


def write_sd_file(
    devices: Iterable[FleetDevice],
    path: Path,
    *,
    port: int = DEFAULT_AGENT_PORT,
    address: Callable[[FleetDevice], str | None] | None = None,
) -> int:
    """Write the file_sd JSON for ``devices`` to ``path`` atomically; return how many targets it has.

    Prometheus watches the file: a half-written one would drop every agent until the next
    write, so the JSON goes to a temporary file in the same folder and replaces ``path``.
    Nothing is written when the content is unchanged, so Prometheus reloads only on change.
    """
    entries = sd_targets(devices, port=port, address=address)
    text = json.dumps(entries, indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text(encoding="utf-8") == text:
            return len(entries)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # Prometheus runs as its own user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(entries)
