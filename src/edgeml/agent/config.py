"""``agent.yaml``: what one device is, where it pulls from, what it serves.

Validated before anything starts; every error names its YAML path. Secrets (store
credentials, the device token) may be given inline or, better, as files (``*_file``) that
Ansible writes with mode 0600.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, model_validator

from edgeml.errors import ConfigError
from edgeml.settings import StoreSettings
from edgeml.spec.types import Slug

__all__ = ["AgentConfig", "load_agent_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpConfig(_Strict):
    host: str = Field("127.0.0.1", description="address to serve on (0.0.0.0 for every interface)")
    port: int = Field(8500, ge=0, le=65535, description="port (0: any free port)")
    max_body_bytes: ByteSize = Field(ByteSize(1 << 20), description="larger request bodies get 413")
    max_rows: int = Field(1024, ge=1, description="most rows one request may carry")
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request body not whole this long after the request began: 408, closed"
    )
    max_slow_uploads: int = Field(
        32, ge=1, description="requests waiting for body bytes at once; one more gets 503 at once"
    )


class GrpcConfig(_Strict):
    """The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``)."""

    host: str = Field("127.0.0.1", description="address to serve gRPC on (0.0.0.0 for every interface)")
    port: int = Field(8501, ge=0, le=65535, description="port (0: any free port)")
    max_message_bytes: ByteSize = Field(
        ByteSize(1 << 20), description="larger request messages are refused (RESOURCE_EXHAUSTED)"
    )
    workers: int = Field(4, ge=1, le=64, description="threads answering calls")


class MqttConfig(_Strict):
    broker: str = Field(description="mqtt://host:port (mqtts:// for TLS)")
    topic_in: str = Field(description="sensor readings to predict on (JSON per message)")
    topic_out: str = Field(description="where predictions go (QoS 1)")


class SyncConfig(_Strict):
    interval_s: float = Field(30.0, gt=0, description="how often to check the channel pointer")
    channels: list[str] = Field(["stable", "canary"], description="channels this device may follow")
    health_window_s: float = Field(60.0, ge=0, description="watch a new model this long before trusting it")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="runtime errors above this share: roll back")
    max_p99_ratio: float = Field(3.0, gt=1, description="p99 above this multiple of the previous model's")
    min_p99_rise_ms: float = Field(
        5.0, ge=0, description="a p99 rise smaller than this is noise, whatever the ratio (sub-ms models)"
    )
    min_requests: int = Field(20, ge=1, description="requests needed before judging a new model")


class CentralConfig(_Strict):
    url: str = Field(description="central node, e.g. http://central:8080")
    token: str | None = Field(None, description="device token (prefer token_file)")
    token_file: Path | None = Field(None, description="file holding the device token")

    def read_token(self) -> str:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read central.token_file {self.token_file}: {exc.strerror}"
                ) from exc
        if self.token is None:
            raise ConfigError("central needs token or token_file")
        return self.token


class TelemetryConfig(_Strict):
    window_s: float = Field(60.0, gt=0, description="close a telemetry window after this long")
    window_rows: int = Field(10_000, ge=1, description="... or after this many rows")
    sample_rows: int = Field(
        50,
        ge=0,
        le=2000,
        description="rows a window keeps as a uniform sample, for the central node's NannyML; only "
        "for models whose spec's compliance is 'none', never pii inputs; 0: none",
    )
    spool_max_bytes: ByteSize = Field(
        ByteSize(64 << 20), description="spool size; the oldest batch goes first"
    )
    prediction_log: int = Field(
        10_000,
        ge=0,
        description="answered requests kept until the central node has them, so labels sent to "
        "/v1/feedback can be joined with their inputs (within the compliance mode); 0: off",
    )


class AgentConfig(_Strict):
    """One device."""

    device_id: Slug = Field(description="unique device name; also decides its canary cohort")
    group: Slug | None = Field(None, description="device group rollouts can target (e.g. a production line)")
    profile: Slug = Field(description="firmware profile: which bundle to run, threads, runtime")
    model: Slug = Field(description="registered model this device serves")
    store: StoreSettings = Field(description="where bundles are (read-only device credentials)")
    keyring: Path = Field(description="folder of trusted <key id>.pub files")
    state_dir: Path = Field(description="bundles, blob cache, state and telemetry spool")
    http: HttpConfig = Field(default_factory=HttpConfig)
    grpc: GrpcConfig | None = Field(None, description="OIP v2 over gRPC beside HTTP; none: off")
    mqtt: MqttConfig | None = None
    sync: SyncConfig = Field(default_factory=SyncConfig)
    central: CentralConfig | None = Field(None, description="where telemetry goes; none: kept in the spool")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @model_validator(mode="after")
    def _store_named(self) -> AgentConfig:
        if not self.store.url:
            raise ValueError("store.url is required: s3://bucket/prefix (MinIO) or file:///dir")
        return self

    @property
    def store_url(self) -> str:
        assert self.store.url is not None  # checked at validation
        return self.store.url


def load_agent_config(path: Path) -> AgentConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"agent config {path} is not valid YAML: {exc}") from exc
    try:
        return AgentConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"agent config {path}: {problems}") from exc
