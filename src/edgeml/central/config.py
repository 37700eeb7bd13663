"""``central.yaml``: how the central node runs.

One YAML file plus CLI flags (``--host``, ``--port``); nothing here reads the environment.
Secrets (the admin and bootstrap tokens, S3 keys) live in files of their own, mode 0600,
named by the config. Relative paths are relative to the config file's folder, so a
folder written by ``edgeml central init`` can move as a whole.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgeml.errors import ConfigError
from edgeml.settings import S3Settings

__all__ = [
    "AlertsConfig",
    "CentralConfig",
    "GateConfig",
    "LimitsConfig",
    "MonitorConfig",
    "NannyMLConfig",
    "PrometheusSdConfig",
    "RetrainConfig",
    "StoreConfig",
    "load_central_config",
    "read_token_file",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_to_config(value: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base")
    if value is None or value.is_absolute() or base is None:
        return value
    return Path(base) / value


class StoreConfig(_Strict):
    """The object store holding bundles and channel pointers (read only)."""

    url: str = Field(description="file:///dir or s3://bucket[/prefix]")
    s3: S3Settings = Field(default_factory=S3Settings, description="endpoint and TLS for s3:// URLs")
    access_key_file: Path | None = Field(None, description="file holding the S3 access key id")
    secret_key_file: Path | None = Field(None, description="file holding the S3 secret key")

    _paths = field_validator("access_key_file", "secret_key_file")(_relative_to_config)

    def s3_settings(self) -> S3Settings:
        """The S3 settings with the keys read from their files."""
        update: dict[str, Any] = {}
        if self.access_key_file is not None:
            update["access_key"] = read_token_file(self.access_key_file, "store.access_key_file")
        if self.secret_key_file is not None:
            update["secret_key"] = read_token_file(self.secret_key_file, "store.secret_key_file")
        return S3Settings.model_validate(self.s3.model_dump() | update) if update else self.s3


class LimitsConfig(_Strict):
    max_body_bytes: ByteSize = Field(ByteSize(4 << 20), description="larger request bodies get 413")
    max_queued_batches: int = Field(
        2000, ge=1, description="telemetry batches waiting for the writer; beyond, devices get 429"
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with 429 and 503")
    clock_skew_s: float = Field(
        300.0, ge=0, description="a batch's window may end at most this far after the server's now"
    )
    max_window_s: float = Field(
        86400.0, gt=0, description="longest telemetry window accepted (window_end - window_start)"
    )
    device_batches_per_s: float = Field(
        10.0,
        gt=0,
        description="telemetry batches one device may send per second, sustained (token bucket; "
        "agents send one per model a minute, more while their spool drains)",
    )
    device_burst: int = Field(
        120, ge=1, description="batches one device may send at once before device_batches_per_s applies"
    )


class NannyMLConfig(_Strict):
    """NannyML on the row samples of groups whose compliance allows them (``none``).

    It needs the version's reference rows published next to its manifest, and it is slow, so
    it runs on its own cadence, on a bounded number of sampled rows.
    """

    enabled: bool = Field(True, description="run NannyML where row samples and reference rows exist")
    interval_s: float = Field(
        300.0, gt=0, description="seconds between NannyML passes (each in a monitor round)"
    )
    min_rows: int = Field(
        500, ge=10, description="a group with fewer sampled rows in the window is not analysed"
    )
    max_rows: int = Field(
        5000, ge=10, description="sampled rows analysed at most (a random subset): bounds NannyML's run time"
    )

    @model_validator(mode="after")
    def _rows(self) -> NannyMLConfig:
        if self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) must be at least min_rows ({self.min_rows})")
        return self


class MonitorConfig(_Strict):
    """The watch over telemetry: drift and accuracy per model, version and device group."""

    enabled: bool = Field(True, description="run the watch (off: only the fleet page computes drift)")
    interval_s: float = Field(30.0, gt=0, description="seconds between rounds")
    window_s: float = Field(600.0, gt=0, description="each round judges telemetry from this far back")
    min_rows: int = Field(200, ge=1, description="a group with fewer rows in the window is not judged")
    min_js: float = Field(
        0.0,
        ge=0,
        le=1,
        description="optional effect-size floor: a drift alarm also needs this Jensen-Shannon distance "
        "(0: off; the band from reference chunks decides, as NannyML's does)",
    )
    nannyml: NannyMLConfig = Field(default_factory=NannyMLConfig)


class AlertsConfig(_Strict):
    webhook_url: str | None = Field(None, description="where alerts are POSTed (JSON); none: gauges only")
    repeat_after_s: float = Field(4 * 3600.0, gt=0, description="a firing alert is sent again after this")


class RetrainConfig(_Strict):
    """Automatic retraining: the pipeline as a job, when the spec's ``retrain:`` policy says so."""

    spec: Path | None = Field(None, description="the pipeline spec to run; none: no automatic retraining")
    home: Path | None = Field(None, description="appliance home the job runs with (store, MLflow, keys)")
    dashboard: str | None = Field(None, description="Ray dashboard to submit to; none: a local job")

    _paths = field_validator("spec", "home")(_relative_to_config)


class GateConfig(_Strict):
    """Quality-gated rollout: each monitor round, canaries are promoted or rolled back by accuracy.

    The rule itself (soak time, margin, evidence needed) comes from each version's signed
    manifest (the spec's ``rollout.gate``); here is only whether to act, and with which key.
    """

    enabled: bool | None = Field(
        None,
        description="judge canaries and act; needs a writable store, keyring and gate.keys_home. "
        "Default (unset): on whenever those are set and the monitor runs; false: off; true: "
        "refuse to start without them",
    )
    keys_home: Path | None = Field(
        None,
        description="folder whose keys/ holds the signing key (`edgeml keys init`); the pointers "
        "the gate writes are signed with it, so devices must trust its public key",
    )
    lookback_s: float = Field(
        86400.0, gt=0, description="how far back the champion's latest telemetry and labels are looked for"
    )

    _paths = field_validator("keys_home")(_relative_to_config)


class PrometheusSdConfig(_Strict):
    """Prometheus file-based discovery of the agents, written from the device registry."""

    file: Path | None = Field(
        None, description="file_sd JSON Prometheus watches; rewritten on every (de)registration"
    )
    agent_port: int = Field(8500, ge=1, le=65535, description="port of each agent's /metrics")
    # device ids are host names on the plant network (the Ansible inventory uses them so)

    _paths = field_validator("file")(_relative_to_config)


class CentralConfig(_Strict):
    """The central node."""

    db_path: Path = Field(description="the DuckDB telemetry file (one process owns it)")
    admin_token_file: Path = Field(description="file holding the admin token (operators, automation)")
    bootstrap_token_file: Path | None = Field(
        None, description="file holding the token devices register with; none: only admins register"
    )
    store: StoreConfig | None = Field(None, description="where channel pointers are; none: no targets")
    keyring: Path | None = Field(None, description="folder of trusted <key id>.pub files, to verify pointers")
    retention_days: int = Field(30, ge=1, description="telemetry and feedback older than this are deleted")
    db_memory: ByteSize = Field(
        ByteSize(1 << 30),
        ge=64 << 20,
        description="DuckDB's buffer pool: the node's memory grows with telemetry written up to about "
        "this, then stays; less makes big drift queries spill to disk",
    )
    compact_every_s: float = Field(3600.0, gt=0, description="how often old rows are deleted")
    offline_after_s: float = Field(300.0, gt=0, description="a device silent this long is offline")
    targets_cache_s: float = Field(5.0, ge=0, description="how long channel pointers read are reused")
    fleet_auth: Literal["none", "admin"] = Field(
        "none",
        description="who may read / and /v1/fleet: anyone (they show what /metrics shows) or admins",
    )
    host: str = Field("127.0.0.1", description="address to serve on (0.0.0.0: every interface)")
    port: int = Field(8080, ge=0, le=65535)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    prometheus_sd: PrometheusSdConfig = Field(default_factory=PrometheusSdConfig)

    _paths = field_validator("db_path", "admin_token_file", "bootstrap_token_file", "keyring")(
        _relative_to_config
    )

    @property
    def gate_on(self) -> bool:
        """Whether the quality gate runs: asked for, or (by default) possible."""
        if self.gate.enabled is not None:
            return self.gate.enabled
        needs = (self.store, self.keyring, self.gate.keys_home)
        return all(v is not None for v in needs) and self.monitor.enabled

    @model_validator(mode="after")
    def _gate_needs(self) -> CentralConfig:
        if self.gate.enabled:
            missing = [
                name
                for name, value in (
                    ("store", self.store),
                    ("keyring", self.keyring),
                    ("gate.keys_home", self.gate.keys_home),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"gate.enabled needs {', '.join(missing)}")
            if not self.monitor.enabled:
                raise ValueError("gate.enabled needs monitor.enabled: the gate runs in the monitor's rounds")
        return self

    def admin_token(self) -> str:
        return read_token_file(self.admin_token_file, "admin_token_file")

    def bootstrap_token(self) -> str | None:
        if self.bootstrap_token_file is None:
            return None
        return read_token_file(self.bootstrap_token_file, "bootstrap_token_file")


def read_token_file(path: Path, what: str) -> str:
    """A secret from its file: refused when others may read it or when it is empty."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(
            f"{what} {path} is readable by others (mode {mode:04o}); refusing to use it",
            hint=f"chmod 600 {path}",
        )
    if not value:
        raise ConfigError(f"{what} {path} is empty")
    return value


def load_central_config(path: Path, **overrides: Any) -> CentralConfig:
    """The config in ``path``, with ``overrides`` (CLI flags; None values are ignored) on top."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read central config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"central config {path} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"central config {path} must hold a mapping at its top level")
    raw |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return CentralConfig.model_validate(raw, context={"base": path.parent.resolve()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"central config {path}: {problems}") from exc
