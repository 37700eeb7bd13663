"""What the demo's stages share: options, results and the constants both halves use.

The demo's field half (``fleet``) and its report read what the pipeline half (``run``) made;
keeping these here lets each import them without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeml.bundle.build import BuildResult
from edgeml.bundle.channels import ChannelPointer
from edgeml.features.build import FeatureReport
from edgeml.ingest.run import IngestReport
from edgeml.simulate.traffic import TrafficResult
from edgeml.spec import Spec
from edgeml.train.run import TrainReport
from edgeml.validate import ValidationReport

__all__ = ["DAILY_SWING", "DRIFTED_GROUP", "DemoOptions", "DemoResult", "FleetOptions", "FleetResult"]

#: the device group whose sensors drift in the demo (the fleet drives it, the report follows it)
DRIFTED_GROUP = "line-b"

#: the pumps run at a steady load, so the field's readings resemble training's unless drift is injected
DAILY_SWING = 0.02


@dataclass(frozen=True)
class DemoOptions:
    machines: int = 6
    readings: int = 1_500
    seed: int = 0
    trials: int = 8
    fleet: bool = True  # stages 3-5: central node, agents, drift, retraining, canary, promotion
    fleet_readings: int = 1200  # per machine and phase in the field
    keep_running: bool = False


@dataclass
class DemoResult:
    specs: list[Spec] = field(default_factory=list)
    store_url: str = ""
    landed_key: str = ""
    rows: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    ingest: IngestReport | None = None
    validation: ValidationReport | None = None
    features: FeatureReport | None = None
    training: TrainReport | None = None
    bundles: list[BuildResult] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # profile -> why its export was refused
    channel: ChannelPointer | None = None
    keyring: Path | None = None
    fleet: FleetResult | None = None
    report: Path | None = None


@dataclass(frozen=True)
class FleetOptions:
    machines: int = 6  # per group: a line of pumps like the one training saw
    readings: int = 1200  # per machine and phase
    timeout_s: float = 600.0
    keep_running: bool = False  # leave the central node and agents up until Ctrl-C


@dataclass
class FleetResult:
    central_url: str = ""
    agents: dict[str, str] = field(default_factory=dict)  # device id -> URL
    traffic: dict[str, TrafficResult] = field(default_factory=dict)  # phase/group -> result
    alerts: list[dict[str, Any]] = field(default_factory=list)
    drifted_features: list[str] = field(default_factory=list)
    retrain_log: str = ""
    new_version: int | None = None
    accuracy: dict[str, float] = field(default_factory=dict)  # what -> realized accuracy
    promoted: bool = False
    gate: dict[str, Any] = field(default_factory=dict)  # the central node's promote/rollback decision
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, event)
    versions: dict[str, int] = field(default_factory=dict)  # device id -> version at the end
    failed_requests: int = 0
    drift_rounds: list[dict[str, Any]] = field(default_factory=list)  # /v1/drift answers over time
