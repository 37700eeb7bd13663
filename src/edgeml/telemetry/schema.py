"""The telemetry contract: what a device sends, and what the central node's store answers.

Both sides import this module and nothing of each other: the agent builds
:class:`TelemetryBatch` (:mod:`edgeml.agent.telemetry`), the central node stores and reads
them (:class:`~edgeml.telemetry.store.TelemetryStore`). The store's records (devices,
feedback, acknowledgements, pooled windows) live here too, since they cross the pipe to the
store process and every layer of the central node reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edgeml.bundle.manifest import Count, Histogram
from edgeml.errors import BatchConflict

__all__ = [
    "LATENCY_EDGES",
    "CalibratedSums",
    "CompactResult",
    "Device",
    "FeatureTelemetry",
    "FeedbackItem",
    "FeedbackRecord",
    "Ingested",
    "LabelledRow",
    "LabelsStored",
    "LoggedPrediction",
    "Outcomes",
    "PooledWindow",
    "PredictionLogBatch",
    "RowsPoint",
    "SampleRow",
    "Stored",
    "TelemetryAck",
    "TelemetryBatch",
]

#: request latency bins, seconds (open-ended on both sides, like every histogram here)
LATENCY_EDGES = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]


# --- agent -> central ---------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureTelemetry(_Wire):
    """One input over a window, on its reference bins."""

    edges: list[float] | None = Field(None, description="histogram cut points (numeric; text: length)")
    values: list[str] | None = Field(None, description="reference categories; counts ends with 'other'")
    counts: list[Count] = Field(
        default_factory=list, description="per bin or category; empty when the manifest has no reference"
    )
    missing: Count = Field(
        0,
        description="None or NaN: not in counts, except text's (length 0, as the reference counts them)",
    )
    out_of_range: Count = Field(0, description="below the input's min, above its max, or not in its values")


class CalibratedSums(_Wire):
    """What confidence-based performance estimation (CBPE) needs, without labels."""

    sums: dict[str, float] = Field(description="per class: sum over rows of its calibrated probability")
    expected_correct: float = Field(
        description="sum over rows of the predicted class's calibrated probability (/ rows: accuracy)"
    )
    rows: Count = Field(description="rows summed: those with finite probabilities")


class SampleRow(_Wire):
    inputs: dict[str, Any] = Field(description="non-pii inputs of one row")
    prediction: str | float | None
    probabilities: dict[str, float] | None = Field(
        None, description="per class, for classifiers: what CBPE needs on the central node"
    )


class TelemetryBatch(_Wire):
    """One closed window of one model version on one device: the agent -> central contract."""

    format: Literal[1] = 1
    device_id: str
    batch_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex: the idempotency key")
    model: str
    version: int = Field(ge=1, le=2**31 - 1)
    profile: str
    group: str | None = None
    window_start: AwareDatetime
    window_end: AwareDatetime
    rows: Count = Field(description="rows predicted")
    requests: Count = Field(description="requests answered")
    errors: dict[str, Count] = Field(default_factory=dict, description="failed requests by kind")
    features: dict[str, FeatureTelemetry]
    predictions: dict[str, Count] = Field(
        description="predicted label counts (classifiers, clusters, anomaly)"
    )
    scores: dict[str, Histogram] = Field(description="same keys and edges as the manifest's reference scores")
    calibration: CalibratedSums | None = None
    latency: Histogram = Field(description="request latency, seconds, on LATENCY_EDGES")
    sample: list[SampleRow] = Field(
        default_factory=list, description="reservoir sample of rows; only under compliance 'none'"
    )
    dropped_before: Count = Field(
        0, description="batches this device dropped (spool full) since the last one it kept"
    )


@dataclass
class PooledWindow:
    """The summed telemetry of one (model, version, group, window)."""

    model: str
    version: int
    group: str | None
    start: datetime
    end: datetime
    batches: int = 0
    rows: int = 0
    features: dict[str, FeatureTelemetry] = field(default_factory=dict)
    scores: dict[str, Histogram] = field(default_factory=dict)
    predictions: dict[str, int] = field(default_factory=dict)
    calibration: CalibratedSums | None = None
    sample: list[SampleRow] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


# --- the store's records --------------------------------------------------------------


class TelemetryAck(_Wire):
    """The answer to an accepted batch; a repeat of the same batch gets this same answer."""

    status: str = Field("accepted", description="always 'accepted'")
    device_id: str
    batch_id: str
    received_at: AwareDatetime = Field(description="when the central node first stored the batch")


@dataclass(frozen=True)
class Ingested:
    ack: TelemetryAck
    duplicate: bool  # the batch was already stored: nothing was written


class Device(_Wire):
    """One registered device, as the fleet registry knows it."""

    device_id: str
    group: str | None
    profile: str
    model: str = Field(description="the model it was registered to serve")
    registered_at: AwareDatetime
    decommissioned_at: AwareDatetime | None = None
    last_seen: AwareDatetime | None = Field(None, description="when its latest telemetry arrived")
    last_window_end: AwareDatetime | None = Field(None, description="end of its newest telemetry window")
    serving_model: str | None = Field(None, description="model its newest telemetry is about")
    serving_version: int | None = Field(None, description="version its newest telemetry is about")
    dropped_total: int = Field(0, description="telemetry batches it reported dropping (spool full)")

    @property
    def active(self) -> bool:
        return self.decommissioned_at is None


class FeedbackItem(_Wire):
    """One ground-truth label."""

    prediction_id: str = Field(min_length=1, max_length=256, description="the id the prediction was given")
    label: str | float = Field(description="the true class or value")
    predicted: str | float | None = Field(None, description="what the model answered, when known")
    model: str | None = Field(None, max_length=128)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    device_id: str | None = Field(None, max_length=128, description="the device that predicted")


class FeedbackRecord(_Wire):
    prediction_id: str
    label: str | float
    predicted: str | float | None
    model: str | None
    version: int | None
    device_id: str | None
    group: str | None = Field(description="the device's group, when the device is known")
    received_at: AwareDatetime
    source: str = Field(description="'admin' or the device that sent it")


class RowsPoint(_Wire):
    """Rows predicted by one device group in one time bucket."""

    group: str | None
    start: AwareDatetime
    rows: int


@dataclass(frozen=True)
class CompactResult:
    batches: int
    feedback: int


@dataclass(frozen=True)
class ErasedPredictions:
    """What an erasure removed from the telemetry file (:meth:`erase_predictions`)."""

    predictions: int  # logged predictions whose input matched
    labels: int  # labels of those predictions
    column_logged: bool  # whether any logged prediction (of the model) holds the column at all
    samples: int = 0  # telemetry row samples (compliance none) whose input matched: out of their batches


class Stored(NamedTuple):
    """How a batch of a group was stored: now, or before (a repeat with the same body)."""

    received_at: datetime
    duplicate: bool

    def answer(self, batch: TelemetryBatch) -> Ingested:
        """What the device that sent ``batch`` is told."""
        ack = TelemetryAck(device_id=batch.device_id, batch_id=batch.batch_id, received_at=self.received_at)
        return Ingested(ack, self.duplicate)


#: each batch of a group: stored, or refused (its id was used with a different body)
Outcomes = list[Stored | BatchConflict]


# --- the prediction log: what a label needs to be joined (agent -> central) ------------------


class LoggedPrediction(_Wire):
    """One answered row, kept by the device so that a later label can be joined to its inputs."""

    prediction_id: str = Field(min_length=1, max_length=300)
    model: str
    version: int = Field(ge=1, le=2**31 - 1)
    at: AwareDatetime = Field(description="when the device answered")
    inputs: dict[str, Any] = Field(description="the inputs the compliance mode lets leave the device")
    prediction: str | float | None = Field(description="the label (classifiers) or the first output's value")
    traceparent: str | None = Field(
        None, max_length=64, description="W3C traceparent of the request's span, when it was traced"
    )


class PredictionLogBatch(_Wire):
    """Logged predictions of one device; ``batch_id`` makes a resend harmless."""

    format: Literal[1] = 1
    device_id: str
    batch_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex: the idempotency key")
    predictions: list[LoggedPrediction] = Field(max_length=10_000)
    dropped_before: Count = Field(
        0, description="predictions the device's full log let go since the last batch"
    )


class LabelsStored(_Wire):
    """What became of a batch of labels."""

    accepted: int = Field(description="labels stored (a repeat of a stored (prediction id, label) is not)")
    duplicates: int = Field(description="labels already stored with the same prediction id and label")
    joined: int = Field(description="accepted labels whose prediction the central node has (inputs known)")
    unknown: int = Field(
        description="accepted labels for prediction ids no device has reported (yet): they join when it does"
    )
    unknown_ids: list[str] = Field(default_factory=list, description="up to 20 of those ids")


class LabelledRow(_Wire):
    """A label joined with the logged prediction it judges."""

    prediction_id: str
    model: str
    version: int
    device_id: str
    predicted_at: AwareDatetime
    inputs: dict[str, Any]
    prediction: str | float | None
    label: str | float
    labelled_at: AwareDatetime = Field(description="when the (latest) label arrived")
