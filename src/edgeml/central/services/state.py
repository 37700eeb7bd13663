"""One running central node: what the routes and the services below them share."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeml.central.config import CentralConfig
from edgeml.central.monitor import Monitor
from edgeml.central.services.admission import DeviceRateLimiter
from edgeml.central.services.targets import TargetResolver
from edgeml.telemetry.store import TelemetryStore

__all__ = ["CentralState"]


@dataclass
class CentralState:
    """One running central node: its config, store, secrets and what the routes remember."""

    config: CentralConfig
    store: TelemetryStore
    admin_token: str
    bootstrap_token: str | None
    targets: TargetResolver
    # device id -> the DEVICE_MODEL labels set for it, so a version change removes the old series
    serving_labels: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    monitor: Monitor | None = None  # the watch over drift and accuracy (None: disabled)
    limiter: DeviceRateLimiter = field(init=False)  # each device's telemetry rate

    def __post_init__(self) -> None:
        self.limiter = DeviceRateLimiter.of(self.config.limits)
