"""Pipeline spec models: the single contract every stage reads.

A spec is YAML validated by these pydantic models. Unknown keys are errors
everywhere. Structural rules live on the models; rules that relate sections to each
other (a target that must be a column, a family that must suit the task) live in
:mod:`edgeml.spec.checks`, so that every problem is reported at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edgeml.spec.types import Duration, Identifier, Slug

__all__ = [
    "FAMILIES",
    "METRICS",
    "CanaryGate",
    "Column",
    "Expectation",
    "Features",
    "FileSource",
    "Gates",
    "HttpAuth",
    "HttpSource",
    "MicroBatch",
    "MqttSource",
    "Pagination",
    "ParamRange",
    "Pipeline",
    "Retrain",
    "RetrainBudget",
    "RetrainHolds",
    "RetrainTriggers",
    "Rollout",
    "RowFeature",
    "Schema",
    "Search",
    "Serving",
    "Source",
    "Spec",
    "SqlSource",
    "Task",
    "Threshold",
    "WindowFeature",
]

Task = Literal["classification", "regression", "clustering", "anomaly", "text-classification"]
ColumnType = Literal["float", "int", "bool", "string", "category", "timestamp", "text"]
Severity = Literal["error", "warn"]

#: model families each task can search over, and the hyper-parameters each family takes
FAMILIES: Mapping[Task, Mapping[str, frozenset[str]]] = {
    "classification": {
        "logistic": frozenset({"C", "max_iter", "class_weight"}),
        "random_forest": frozenset({"n_estimators", "max_depth", "min_samples_leaf", "max_features"}),
        "hist_gradient_boosting": frozenset(
            {"learning_rate", "max_iter", "max_leaf_nodes", "max_depth", "l2_regularization"}
        ),
        "mlp": frozenset(
            {"hidden_units", "layers", "learning_rate", "epochs", "dropout", "batch_size", "weight_decay"}
        ),
    },
    "regression": {
        "linear": frozenset({"alpha"}),
        "random_forest": frozenset({"n_estimators", "max_depth", "min_samples_leaf", "max_features"}),
        "hist_gradient_boosting": frozenset(
            {"learning_rate", "max_iter", "max_leaf_nodes", "max_depth", "l2_regularization"}
        ),
        "mlp": frozenset(
            {"hidden_units", "layers", "learning_rate", "epochs", "dropout", "batch_size", "weight_decay"}
        ),
    },
    "clustering": {"kmeans": frozenset({"n_clusters", "n_init"})},
    "anomaly": {"isolation_forest": frozenset({"n_estimators", "max_samples", "contamination"})},
    "text-classification": {"tfidf_linear": frozenset({"C", "ngram_max", "min_df", "max_features"})},
}

#: metrics per task and whether higher is better
METRICS: Mapping[Task, Mapping[str, Literal["max", "min"]]] = {
    "classification": {
        "accuracy": "max",
        "balanced_accuracy": "max",
        "f1_macro": "max",
        "roc_auc": "max",
        "log_loss": "min",
    },
    "regression": {"rmse": "min", "mae": "min", "r2": "max"},
    "clustering": {"silhouette": "max", "davies_bouldin": "min"},
    "anomaly": {"f1": "max", "roc_auc": "max", "precision": "max", "recall": "max"},
    "text-classification": {"accuracy": "max", "f1_macro": "max", "balanced_accuracy": "max"},
}
DEFAULT_METRIC: Mapping[Task, str] = {
    "classification": "f1_macro",
    "regression": "rmse",
    "clustering": "silhouette",
    "anomaly": "f1",
    "text-classification": "f1_macro",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------------------- sources


_FORMATS = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl", "ndjson": "jsonl"}


class _SourceBase(_Model):
    name: Slug = Field(description="unique name of this source; names its folder in the lake")


class FileSource(_SourceBase):
    """Files: CSV, Parquet or JSON Lines, local or on the object store."""

    # `format` is optional in YAML (inferred before validation), so not required in the schema.
    model_config = ConfigDict(json_schema_extra=lambda schema: schema["required"].remove("format"))

    kind: Literal["file"] = Field(description="`file`")
    path: str = Field(
        min_length=1,
        description="a path or glob (relative to the spec file), `store://prefix/*.csv` on the "
        "appliance's object store, or an `s3://bucket/prefix/*.csv` URL",
    )
    format: Literal["csv", "parquet", "jsonl"] = Field(
        description="file format; inferred from the extension (.csv, .parquet, .jsonl) when omitted"
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter")

    @model_validator(mode="before")
    @classmethod
    def _infer_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") is None and not isinstance(data.get("path"), str):
            # `path` is missing or not a string, which fails validation and is reported; a
            # stand-in value keeps a "format: required" from sending the user after a key they
            # need not write. It can never reach a valid FileSource.
            return {**data, "format": "csv"}
        if isinstance(data, dict) and data.get("format") is None:
            suffix = data["path"].lower().rsplit(".", 1)[-1]
            inferred = _FORMATS.get(suffix)
            if inferred is None:
                raise ValueError(
                    f"cannot infer the format of {data['path']!r}; set format: csv | parquet | jsonl"
                )
            data = {**data, "format": inferred}
        return data


class SqlSource(_SourceBase):
    """A SQL query against a database (SQLAlchemy URL) or a DuckDB file."""

    kind: Literal["sql"] = Field(description="`sql`")
    url: str = Field(
        pattern=r"^[a-z][a-z0-9+]*://",
        description="SQLAlchemy URL (`postgresql://user@host/db`) or `duckdb:///path/file.duckdb`; "
        "no password here: use `password_env`",
    )
    query: str = Field(min_length=1, description="the SELECT that yields the rows")
    password_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="environment variable holding the database password",
    )

    @field_validator("url")
    @classmethod
    def _no_inline_password(cls, url: str) -> str:
        if re.match(r"^[a-z][a-z0-9+]*://[^/@:]+:[^/@]+@", url):
            raise ValueError("the URL holds a password; remove it and set password_env instead")
        return url


class HttpAuth(_Model):
    """A secret header, read from the environment at run time (never written in the spec)."""

    header: str = Field("Authorization", description="header name")
    scheme: str | None = Field("Bearer", description="prefix before the token, e.g. `Bearer`; null for none")
    token_env: str = Field(
        pattern=r"^[A-Z_][A-Z0-9_]*$", description="environment variable holding the token"
    )


class Pagination(_Model):
    """How to walk a paginated JSON API."""

    kind: Literal["none", "page", "cursor", "link"] = Field(
        "none",
        description="`page`: page-number parameter; `cursor`: next cursor from the body; "
        "`link`: follow the RFC 8288 `Link: rel=next` header",
    )
    page_param: str = Field("page", description="query parameter for the page number (`page`)")
    size_param: str | None = Field("page_size", description="query parameter for the page size")
    page_size: int = Field(500, ge=1, le=100_000, description="records asked per page")
    cursor_param: str = Field("cursor", description="query parameter carrying the cursor (`cursor`)")
    cursor_path: str = Field("next_cursor", description="dotted path of the next cursor in the body")
    max_pages: int = Field(10_000, ge=1, description="stop after this many pages")


class HttpSource(_SourceBase):
    """A JSON HTTP API pulled page by page, with retries, backoff and a rate limit."""

    kind: Literal["http"] = Field(description="`http`")
    url: str = Field(pattern=r"^https?://", description="endpoint URL (http or https)")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="fixed query parameters"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra non-secret headers")
    auth: HttpAuth | None = Field(None, description="secret header, e.g. a bearer token")
    records_path: str | None = Field(
        None, description="dotted path to the list of records in the body; null if the body is the list"
    )
    pagination: Pagination = Field(default_factory=Pagination, description="pagination scheme")
    rate_limit_per_s: float = Field(5.0, gt=0, description="maximum requests per second")
    retries: int = Field(3, ge=0, le=20, description="retries per request on 429, 5xx and timeouts")
    backoff_s: float = Field(0.5, gt=0, description="first retry delay; doubles each retry, with jitter")
    timeout_s: float = Field(10.0, gt=0, description="timeout per request")


class MicroBatch(_Model):
    """When a stream consumer flushes to the lake: whichever limit is hit first."""

    max_rows: int = Field(10_000, ge=1, description="flush after this many rows")
    max_seconds: float = Field(10.0, gt=0, description="flush after this many seconds")


class MqttSource(_SourceBase):
    """Sensor messages from an MQTT broker, landed as micro-batches."""

    kind: Literal["mqtt"] = Field(description="`mqtt`")
    broker: str = Field(
        pattern=r"^mqtts?://[^/:]+(:\d+)?/?$",
        description="broker URL, `mqtt://host:1883` or `mqtts://host:8883`",
    )
    topics: list[str] = Field(min_length=1, description="topic filters to subscribe to (`+`, `#` allowed)")
    qos: Literal[0, 1, 2] = Field(1, description="subscription QoS; 1 gives at-least-once delivery")
    client_id: str | None = Field(None, description="MQTT client id; a persistent session needs a fixed one")
    username: str | None = Field(None, description="broker user name")
    password_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="environment variable holding the password"
    )
    message_id: str | None = Field(
        "msg_id",
        description="payload field that identifies a message, for de-duplication; null to use a "
        "hash of the payload",
    )
    batch: MicroBatch = Field(default_factory=MicroBatch, description="micro-batch flush limits")

    @field_validator("topics")
    @classmethod
    def _topic_filters(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            levels = topic.split("/")
            bad = (
                not topic
                or any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels)
                or ("#" in levels[:-1])
            )
            if bad:
                raise ValueError(
                    f"{topic!r} is not a valid MQTT topic filter ('+' must fill a whole level, "
                    "'#' only as the last level)"
                )
        return topics


Source = Annotated[FileSource | SqlSource | HttpSource | MqttSource, Field(discriminator="kind")]


# ----------------------------------------------------------------------------- schema


class Column(_Model):
    """One column of the data."""

    type: ColumnType = Field(description="float, int, bool, string, category, timestamp or text")
    unit: str | None = Field(None, description="physical unit, e.g. `degC`, `mm/s`, `bar`, `rpm`")
    description: str = Field("", description="what the column holds")
    pii: bool = Field(
        False, description="personal data: never sent in telemetry; barred from model inputs under gdpr/hipaa"
    )
    nullable: bool = Field(True, description="whether missing values are allowed")
    min: float | None = Field(
        None, description="lowest valid value (numeric columns); rows below it are quarantined at ingest"
    )
    max: float | None = Field(
        None, description="highest valid value (numeric columns); rows above it are quarantined at ingest"
    )
    values: list[str] | None = Field(None, min_length=1, description="allowed values (category columns)")

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        if (self.min is not None or self.max is not None) and self.type not in ("float", "int"):
            raise ValueError(f"min/max apply to float and int columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.values is not None and self.type != "category":
            raise ValueError(f"values apply to category columns, not {self.type}")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ValueError("values hold duplicates")
        return self


class Schema(_Model):
    """The columns the sources deliver, and which play special roles."""

    columns: dict[Identifier, Column] = Field(min_length=1, description="column name -> column")
    timestamp: Identifier | None = Field(
        None, description="event-time column; makes splits time-aware and enables time windows"
    )
    entity: Identifier | None = Field(
        None, description="column identifying the device or machine; window features group by it"
    )


# ----------------------------------------------------------------------- expectations


class _ExpectationBase(_Model):
    severity: Severity = Field("error", description="`error` stops the pipeline; `warn` reports")
    name: str | None = Field(None, description="a name for reports; derived when omitted")


class RowCount(_ExpectationBase):
    """The dataset holds between `min` and `max` rows."""

    kind: Literal["row_count"] = Field(description="`row_count`")
    min: int | None = Field(None, ge=0, description="fewest rows")
    max: int | None = Field(None, ge=0, description="most rows")

    @model_validator(mode="after")
    def _range(self) -> RowCount:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class NotNull(_ExpectationBase):
    """No missing values in `column`."""

    kind: Literal["not_null"] = Field(description="`not_null`")
    column: Identifier = Field(description="column to check")


class Unique(_ExpectationBase):
    """No two rows share the same values of `columns`."""

    kind: Literal["unique"] = Field(description="`unique`")
    columns: list[Identifier] = Field(min_length=1, description="columns forming the key")


class Between(_ExpectationBase):
    """Values of `column` lie within [`min`, `max`]."""

    kind: Literal["between"] = Field(description="`between`")
    column: Identifier = Field(description="column to check")
    min: float | None = Field(None, description="lowest allowed value")
    max: float | None = Field(None, description="highest allowed value")

    @model_validator(mode="after")
    def _range(self) -> Between:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class InSet(_ExpectationBase):
    """Values of `column` are among `values`."""

    kind: Literal["in_set"] = Field(description="`in_set`")
    column: Identifier = Field(description="column to check")
    values: list[str | int | float | bool] = Field(min_length=1, description="allowed values")


class Regex(_ExpectationBase):
    """Values of `column` match `pattern` in full."""

    kind: Literal["regex"] = Field(description="`regex`")
    column: Identifier = Field(description="column to check")
    pattern: str = Field(description="regular expression (Python syntax), matched in full")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class MonotonicTimestamp(_ExpectationBase):
    """Timestamps never go backwards within an entity (schema.entity)."""

    kind: Literal["monotonic_timestamp"] = Field(description="`monotonic_timestamp`")
    column: Identifier | None = Field(None, description="timestamp column; default schema.timestamp")
    strict: bool = Field(False, description="also refuse equal consecutive timestamps")


class Freshness(_ExpectationBase):
    """The newest timestamp is at most `max_age` old when the data is validated."""

    kind: Literal["freshness"] = Field(description="`freshness`")
    column: Identifier | None = Field(None, description="timestamp column; default schema.timestamp")
    max_age: Duration = Field(description="oldest acceptable newest-row age, e.g. `1h`")


class MaxMissingFraction(_ExpectationBase):
    """At most a fraction `max` of `column` is missing."""

    kind: Literal["max_missing_fraction"] = Field(description="`max_missing_fraction`")
    column: Identifier = Field(description="column to check")
    max: float = Field(ge=0, le=1, description="largest allowed missing fraction, 0..1")


Expectation = Annotated[
    RowCount
    | NotNull
    | Unique
    | Between
    | InSet
    | Regex
    | MonotonicTimestamp
    | Freshness
    | MaxMissingFraction,
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------- features


class RowFeature(_Model):
    """A feature computed from one row; it goes inside the exported model graph."""

    name: Identifier = Field(description="feature name")
    expr: str = Field(
        min_length=1,
        description="expression over columns and earlier features: numbers, `+ - * / ** %`, "
        "log, log1p, exp, sqrt, abs, clip, minimum, maximum, hour, day_of_week, month, "
        "is_weekend, bucketize",
    )


class WindowFeature(_Model):
    """A rolling aggregate per entity, computed the same way in batch and on the device."""

    name: Identifier = Field(description="feature name")
    column: Identifier = Field(description="numeric column to aggregate")
    agg: Literal["mean", "std", "min", "max", "sum", "count", "last", "lag"] = Field(
        description="aggregate over the window; `lag` takes the value `lag` readings back"
    )
    size: int | None = Field(None, ge=1, le=100_000, description="window of the last N readings")
    span: Duration | None = Field(None, description="window of the last time span, e.g. `5m`")
    lag: int | None = Field(None, ge=1, le=100_000, description="readings back, for agg `lag`")

    @model_validator(mode="after")
    def _window(self) -> WindowFeature:
        if self.agg == "lag":
            if self.lag is None or self.size is not None or self.span is not None:
                raise ValueError("agg 'lag' takes `lag: N` and no size or span")
        elif (self.size is None) == (self.span is None):
            raise ValueError(f"agg {self.agg!r} takes exactly one of size (readings) or span (time)")
        elif self.lag is not None:
            raise ValueError("`lag` applies to agg 'lag' only")
        return self


class Features(_Model):
    """What the model sees: raw columns, row features, window features, encodings."""

    row: list[RowFeature] = Field(default_factory=list, description="row features, in order")
    window: list[WindowFeature] = Field(default_factory=list, description="window features")
    exclude: list[Identifier] = Field(
        default_factory=list,
        description="columns not fed to the model (beyond target, timestamp, entity, which never are)",
    )
    scaling: Literal["standard", "minmax", "robust", "none"] = Field(
        "standard", description="numeric scaling learned at fit time"
    )
    one_hot: Literal["auto", "none"] = Field(
        "auto", description="`auto`: one-hot encode category inputs, learned at fit time"
    )


# ----------------------------------------------------------------------------- search


class ParamRange(_Model):
    """A hyper-parameter's search range: `low`..`high` (optionally on a log scale) or `choices`."""

    low: float | None = Field(None, description="lower bound (inclusive)")
    high: float | None = Field(None, description="upper bound (inclusive)")
    log: bool = Field(False, description="sample on a log scale (needs low > 0)")
    int_: bool = Field(False, alias="int", description="integers only")
    choices: list[str | int | float | bool | None] | None = Field(
        None, min_length=1, description="a fixed set of values, instead of low/high"
    )

    @model_validator(mode="after")
    def _range(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if self.low > self.high:
            raise ValueError(f"impossible range: low ({self.low:g}) is greater than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low:g}")
        if self.int_ and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an integer range needs whole-number low and high")
        return self


class Search(_Model):
    """The hyper-parameter search (Ray Tune + Optuna)."""

    families: list[str] = Field(min_length=1, description="model families to search over")
    space: dict[str, dict[str, ParamRange]] = Field(
        default_factory=dict, description="family -> parameter -> range; overrides the defaults"
    )
    trials: int = Field(20, ge=1, le=10_000, description="number of trials in all")
    metric: str | None = Field(None, description="metric to optimise; the task's default when omitted")
    scheduler: Literal["asha", "fifo"] = Field(
        "asha", description="`asha` stops weak iterative trials early; `fifo` runs all to the end"
    )
    max_concurrent: int | Literal["auto"] = Field(
        "auto", description="trials at once; `auto` follows the cluster's CPUs"
    )
    seed: int = Field(0, ge=0, description="seed of the search; each trial's seed derives from it")
    time_budget: Duration | None = Field(None, description="stop starting trials after this long")
    holdout_fraction: float = Field(0.2, gt=0, lt=0.5, description="rows held out for evaluation")
    validation_fraction: float = Field(0.2, gt=0, lt=0.5, description="rows used to score trials")

    @field_validator("max_concurrent")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be ≥ 1 or 'auto'")
        return value


# ------------------------------------------------------------------ gates and rollout


class Threshold(_Model):
    """Bounds a metric must meet."""

    min: float | None = Field(None, description="the metric must be at least this")
    max: float | None = Field(None, description="the metric must be at most this")

    @model_validator(mode="after")
    def _some(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        return self


class Gates(_Model):
    """What a trained model must pass to become the `challenger` (and the `champion`)."""

    thresholds: dict[str, Threshold] = Field(default_factory=dict, description="metric -> bounds")
    champion_margin: float = Field(
        0.0, ge=0, description="beat the current champion on the same holdout by at least this"
    )
    champion_tolerance: float = Field(
        0.0,
        ge=0,
        description="largest shortfall of the metric against the champion still accepted, on the same "
        "holdout and on the field's labelled holdout (0: never worse than the champion)",
    )
    quantization_tolerance: float = Field(
        0.01, ge=0, le=1, description="largest holdout-metric drop accepted for int8/fp16 exports"
    )


class CanaryGate(_Model):
    """How the central node judges a canary against the champion (stable) on the same device groups.

    Realized accuracy (from feedback labels) decides once both sides have ``min_labels``;
    until then the label-free estimate does, once both have ``min_rows`` of telemetry.
    """

    soak_s: float = Field(3600.0, ge=0, description="a canary that holds this long is promoted (seconds)")
    margin: float = Field(
        0.02, ge=0, le=1, description="a canary this far below the champion's accuracy is rolled back"
    )
    min_rows: int = Field(500, ge=1, description="telemetry rows each side needs to compare estimates")
    min_labels: int = Field(200, ge=1, description="labels each side needs to compare realized accuracy")


class Rollout(_Model):
    """How a new model reaches devices."""

    channel: Slug = Field("stable", description="channel devices follow")
    canary_percent: float = Field(10.0, ge=0, le=100, description="share of devices that get it first")
    groups: list[Slug] = Field(default_factory=list, description="device groups; empty means all")
    gate: CanaryGate = Field(
        default_factory=CanaryGate, description="the central node's promotion/rollback rule for canaries"
    )


# ---------------------------------------------------------------------------- retrain


class RetrainTriggers(_Model):
    """What makes the central node submit a retraining job (central.yaml's `retrain.spec` names this spec).

    Each is evaluated every monitor round, for the newest version served on any channel; the first
    that fires and no hold holds starts the job (`edgeml pipeline run` to the canary).
    """

    drift: bool = Field(
        True,
        description="a drift breach of the served version in a device group (the job canaries that group)",
    )
    accuracy_drop: float | None = Field(
        None,
        gt=0,
        le=1,
        description="the served version's accuracy in a device group below its holdout accuracy by more "
        "than this: realized (feedback labels) with `accuracy_min_labels` of them, else the label-free "
        "estimate (calibrated sums, else NannyML's CBPE; classifiers); none: off",
    )
    accuracy_min_labels: int = Field(
        100,
        ge=1,
        description="labels in the monitor window that make realized accuracy count over the estimate",
    )
    schedule: Duration | None = Field(
        None,
        description="this long since the last job (before any: since the served version was built), e.g. "
        "`7d`; none: off",
    )
    label_volume: int | None = Field(
        None,
        ge=1,
        description="this many new field labels (joined to predictions) since the last job; none: off",
    )


class RetrainBudget(_Model):
    """Most retraining jobs submitted in a rolling window; a job over budget waits."""

    per_day: int | None = Field(None, ge=1, description="most jobs in any 24 hours; none: no limit")
    per_week: int | None = Field(None, ge=1, description="most jobs in any 7 days; none: no limit")

    @model_validator(mode="after")
    def _week_holds_a_day(self) -> RetrainBudget:
        if self.per_day is not None and self.per_week is not None and self.per_day > self.per_week:
            raise ValueError(f"per_day ({self.per_day}) is more than per_week ({self.per_week})")
        return self


class RetrainHolds(_Model):
    """What keeps a fired trigger from starting a job. One job at a time per dataset always holds."""

    cooldown: Duration | None = Field(
        None, description="least time between two jobs' submissions, e.g. `6h`; none: no wait"
    )
    failure_cooldown: Duration = Field(
        timedelta(minutes=10),
        description="after a failed job, the same data (the served version's snapshot) waits this long",
    )
    no_new_data: bool = Field(
        True,
        description="drift and accuracy triggers hold for a version whose data already went into a job "
        "when no field labels arrived since, and a job stops without training when its ingest finds "
        "nothing new; false: retrain on the same data",
    )
    budget: RetrainBudget = Field(default_factory=RetrainBudget, description="most jobs per day and week")


class Retrain(_Model):
    """The central node's retraining policy for this model: triggers and holds."""

    triggers: RetrainTriggers = Field(default_factory=RetrainTriggers, description="what starts a job")
    holds: RetrainHolds = Field(default_factory=RetrainHolds, description="what keeps one from starting")


# ---------------------------------------------------------------------------- serving


class Serving(_Model):
    """How `edgeml serve` runs the model on the Ray cluster: request batching and replica autoscaling."""

    max_batch_size: int = Field(
        32, ge=1, le=4096, description="most requests one model run answers together (dynamic batching)"
    )
    batch_wait_timeout_s: float = Field(
        0.0005,
        ge=0,
        le=1,
        description="longest the first request of a batch waits for others to join it, in seconds",
    )
    min_replicas: int = Field(1, ge=1, description="replicas kept running however quiet it is")
    max_replicas: int = Field(2, ge=1, description="most replicas autoscaling starts")
    target_ongoing_requests: float = Field(
        32.0, gt=0, description="requests in flight per replica that autoscaling aims at"
    )

    @model_validator(mode="after")
    def _replicas(self) -> Serving:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is greater than max_replicas ({self.max_replicas})"
            )
        return self


# --------------------------------------------------------------------------- pipeline

PipelineType = Literal["batch-training", "real-time-inference", "streaming", "hybrid"]
DeploymentTarget = Literal["cloud", "on-premise", "edge", "hybrid"]
DataVolume = Literal["small", "medium", "large"]


class Pipeline(_Model):
    """What kind of pipeline this is, where its models run and how much data it handles.

    Each value changes what `spec check` requires and what the pipeline does: see
    "Pipeline parameters" below.
    """

    type: PipelineType = Field(
        "batch-training", description="batch-training, real-time-inference, streaming or hybrid"
    )
    deployment_target: DeploymentTarget = Field(
        "edge", description="where models serve: cloud, on-premise (the Ray cluster), edge devices or hybrid"
    )
    data_volume: DataVolume = Field(
        "small", description="small (< 1 GB), medium (1 GB - 1 TB) or large (> 1 TB)"
    )
    schedule: Duration | None = Field(
        None, description="interval of `edgeml pipeline schedule` runs (batch-training and hybrid)"
    )
    retries: int = Field(
        2, ge=0, le=20, description="retries of a failed source read (every kind), with doubling backoff"
    )
    backoff_s: float = Field(1.0, gt=0, le=3600, description="first retry delay of a source read, in seconds")
    sample_rows: int = Field(
        1_000_000,
        ge=1_000,
        description="medium/large: most training rows an in-memory family fits on (a stratified sample)",
    )


# ------------------------------------------------------------------------------- spec


class Spec(_Model):
    """A pipeline spec: from sources to devices."""

    version: Literal[1] = Field(1, description="spec format version")
    name: Slug = Field(description="pipeline and registered-model name")
    description: str = Field("", description="what this pipeline is for")
    sources: list[Source] = Field(min_length=1, description="where the data comes from")
    schema_: Schema = Field(alias="schema", description="columns and their roles")
    expectations: list[Expectation] = Field(default_factory=list, description="data checks")
    features: Features = Field(default_factory=Features, description="model inputs")
    target: Identifier | None = Field(
        None, description="column to predict; for anomaly, the labels that score trials; none for clustering"
    )
    task: Task = Field(description="classification, regression, clustering, anomaly or text-classification")
    search: Search = Field(description="hyper-parameter search")
    gates: Gates = Field(default_factory=Gates, description="quality gates")
    profiles: list[Slug] = Field(
        default_factory=lambda: ["x86-64-generic"],
        min_length=1,
        description="firmware profiles to export for (see firmware-profiles/)",
    )
    compliance: Literal["none", "gdpr", "hipaa", "sox"] = Field(
        "none", description="`none` allows row samples in telemetry; gdpr/hipaa bar pii inputs"
    )
    retention_days: int | None = Field(
        None, ge=1, description="days lake rows are kept (event time); `edgeml data retain` removes the rest"
    )
    min_bin_count: int = Field(
        10,
        ge=2,
        le=1_000_000,
        description="hipaa: telemetry histogram cells under this many rows are merged on the device",
    )
    rollout: Rollout = Field(default_factory=Rollout, description="rollout to devices")
    retrain: Retrain = Field(
        default_factory=Retrain, description="automatic retraining by the central node: triggers and holds"
    )
    serving: Serving = Field(
        default_factory=Serving, description="serving on the Ray cluster (`edgeml serve`)"
    )
    pipeline: Pipeline = Field(
        default_factory=Pipeline, description="pipeline type, deployment target and data volume"
    )

    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path | None:
        """Folder that relative paths in the spec resolve against (the spec file's folder)."""
        return self._base_dir

    def located_at(self, base_dir: Path) -> Spec:
        """A copy whose relative paths resolve against ``base_dir``."""
        copy = self.model_copy()
        copy._base_dir = base_dir
        return copy

    def resolve_path(self, path: str) -> str:
        """``path`` made absolute against :attr:`base_dir`; URLs and absolute paths unchanged."""
        if "://" in path or Path(path).is_absolute() or self.base_dir is None:
            return path
        return str(self.base_dir / path)

    def fingerprint(self) -> str:
        """sha256 of what the spec states, as canonical JSON: names what a model was trained from.

        Values equal to their default are left out, so a release that adds a field with a
        default does not make every spec look changed (the audit trail logs spec changes).
        """
        stated = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        canonical = json.dumps(stated, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def metric(self) -> str:
        """The metric the search optimises."""
        return self.search.metric or DEFAULT_METRIC[self.task]

    @property
    def metric_mode(self) -> Literal["max", "min"]:
        return METRICS[self.task][self.metric]

    def input_columns(self) -> list[str]:
        """Raw columns fed to the model, in schema order.

        Never the target, timestamp or entity; never a ``pii`` column; never an excluded one.
        """
        skip = {self.target, self.schema_.timestamp, self.schema_.entity, *self.features.exclude}
        return [name for name, col in self.schema_.columns.items() if name not in skip and not col.pii]
