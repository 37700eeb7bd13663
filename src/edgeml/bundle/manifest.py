"""The bundle manifest: what a device needs to know to run, check and monitor one model.

The manifest is signed; everything a device trusts about a bundle comes from it. It is
written in canonical JSON (see :func:`edgeml.bundle.keys.canonical_json`), the signature
covers those exact bytes, and the parser runs only after the signature checked out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeml.spec.models import CanaryGate, WindowFeature
from edgeml.spec.types import Slug

__all__ = [
    "FORMAT",
    "MODEL_FILES",
    "Calibration",
    "CategoryCounts",
    "ChunkBands",
    "Count",
    "DriftThresholds",
    "FeatureThreshold",
    "FileEntry",
    "Golden",
    "GroupReference",
    "Histogram",
    "InputField",
    "Manifest",
    "Outputs",
    "Reference",
    "Windows",
    "blob_key",
    "manifest_key",
]

FORMAT = 1
#: the only file types a bundle may carry, and which runtime loads each
MODEL_FILES = {
    "onnxruntime": {".onnx", ".data"},  # graph, and its weights as ONNX external data
    "openvino": {".xml", ".bin"},
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: a count that fits the 64-bit integer columns every store of it uses
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


class FileEntry(_Model):
    path: str = Field(description="file name inside the bundle")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="content digest; the blob's key")
    size: int = Field(ge=0, description="bytes")


class InputField(_Model):
    """One model input: one [N, 1] tensor."""

    name: str
    kind: Literal["numeric", "categorical", "text", "time"]
    dtype: Literal["float64", "float32", "string"] = Field(description="tensor element type the model takes")
    nullable: bool = True
    min: float | None = Field(None, description="lowest valid value; lower is refused")
    max: float | None = Field(None, description="highest valid value; higher is refused")
    values: list[str] | None = Field(None, description="allowed categories, when the spec fixes them")
    unit: str | None = None
    pii: bool = Field(False, description="personal data: never leaves the device in telemetry")


class Outputs(_Model):
    task: str
    names: list[str] = Field(description="model output tensors")
    labels: list[str] | None = Field(None, description="class labels, in probability-column order")


class Histogram(_Model):
    """Counts in open-ended bins: ``len(edges) + 1`` bins cut at ``edges``."""

    kind: Literal["histogram"] = "histogram"
    edges: list[float]
    counts: list[Count]
    missing: Count = 0


class CategoryCounts(_Model):
    """Counts per category; the last count is every other value."""

    kind: Literal["categories"] = "categories"
    values: list[str]
    counts: list[Count]
    missing: Count = 0


class Calibration(_Model):
    """Per class, the observed frequency for a predicted probability (interpolate on ``grid``)."""

    grid: list[float]
    values: dict[str, list[float]]


class FeatureThreshold(_Model):
    """How one input's drift is judged: a method, and the band its values keep on reference chunks.

    ``lower``/``upper`` are mean ∓/± ``std_multiplier`` standard deviations of the method's value
    on the reference's own chunks of :attr:`DriftThresholds.chunk_size` rows (as NannyML's
    ``StandardDeviationThreshold``); None: no bound on that side. chi2 has no band: its alert is
    a p-value under ``alpha``, so its upper bound is the critical value of each chunk's table.
    """

    method: Literal["js", "hellinger", "wasserstein", "chi2"]
    lower: float | None = None
    upper: float | None = None
    alpha: float | None = Field(None, gt=0, lt=1, description="chi2: alert when the p-value is below")
    mean: float | None = Field(None, description="the method's mean over the reference chunks")
    std: float | None = Field(None, description="its standard deviation over the reference chunks")
    chunks: int = Field(ge=0, description="reference chunks the band comes from")


class ChunkBands(_Model):
    """Bands for chunks of a smaller size: for windows with fewer rows than the main chunk size."""

    chunk_size: int = Field(ge=1)
    features: dict[str, FeatureThreshold]


class DriftThresholds(_Model):
    """Per input, the method and band drift is judged by (see :mod:`edgeml.drift`)."""

    chunk_size: int = Field(ge=1, description="rows per reference chunk; the band is for chunks this size")
    std_multiplier: float = Field(3.0, gt=0, description="how many standard deviations the band spans")
    features: dict[str, FeatureThreshold]
    smaller: list[ChunkBands] = Field(
        default_factory=list,
        description="bands of smaller chunk sizes, ascending; a window uses the largest it fills",
    )


class GroupReference(_Model):
    """A device group's own input statistics, for a version trained for that group.

    Counted on the bins of :attr:`Reference.features` (the agent bins on those whatever its group),
    with bands from the group's own rows; the central node judges that group's telemetry by them.
    """

    rows: int
    source: str = Field(description="which rows the statistics come from")
    features: dict[str, Histogram | CategoryCounts]
    drift: DriftThresholds


class Reference(_Model):
    """What the model saw on its holdout rows, as telemetry will report it."""

    rows: int
    source: str = Field(description="which rows the statistics come from")
    features: dict[str, Histogram | CategoryCounts]
    scores: dict[str, Histogram] = Field(description="per output score: probability per class, or the value")
    predictions: dict[str, int] = Field(default_factory=dict, description="predicted label counts")
    calibration: Calibration | None = None
    drift: DriftThresholds | None = Field(
        None, description="per-input thresholds from reference chunks; none (older bundles): bootstrap"
    )
    groups: dict[str, GroupReference] = Field(
        default_factory=dict,
        description="per device group the version was trained for: that group's own input reference",
    )


class Golden(_Model):
    """Inputs with the outputs the exported model gave for them: the smoke test after staging."""

    inputs: list[dict[str, Any]]
    outputs: dict[str, list[Any]]
    tolerance: float


class Windows(_Model):
    """Window features the device computes from the raw stream before predicting (MQTT mode)."""

    entity: str | None = Field(description="column naming the entity (machine) each reading is from")
    timestamp: str = Field(description="column holding each reading's time")
    features: list[WindowFeature]


class Manifest(_Model):
    format: Literal[1] = 1
    model: Slug = Field(description="registered model; a slug, as it names store keys and folders")
    version: int = Field(ge=1, le=2**31 - 1, description="monotonic: the registered model version")
    profile: Slug
    runtime: Literal["onnxruntime", "openvino"]
    precision: str
    created: str
    expires: str
    files: list[FileEntry]
    inputs: list[InputField]
    outputs: Outputs
    windows: Windows | None = Field(None, description="how window-feature inputs are computed online")
    reference: Reference
    golden: Golden
    metrics: dict[str, float]
    export: dict[str, Any] = Field(description="the export report: parity, latency, sizes")
    compliance: Literal["none", "gdpr", "hipaa", "sox"] = Field(
        "none", description="the spec's regime: telemetry carries row samples only under `none`"
    )
    retention_days: int | None = Field(
        None, ge=1, description="the spec's retention_days: the central node keeps telemetry no longer"
    )
    min_bin_count: int | None = Field(
        None, ge=2, description="hipaa: telemetry cells under this many rows are merged on the device"
    )
    gate: CanaryGate | None = Field(
        None, description="how the central node judges this version as a canary; none: the defaults"
    )
    mlflow_run_id: str
    snapshot: str
    key_id: str

    @property
    def model_file(self) -> FileEntry:
        """The file the runtime opens (the .xml of an OpenVINO pair)."""
        wanted = ".onnx" if self.runtime == "onnxruntime" else ".xml"
        return next(f for f in self.files if f.path.endswith(wanted))


def manifest_key(model: str, version: int, profile: str) -> str:
    return f"bundles/{model}/{version}/{profile}/manifest.json"


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"
