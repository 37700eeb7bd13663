"""Settings: the one place that reads the environment and config files.

Precedence, lowest first: built-in defaults < ``$EDGEML_HOME/config.yaml`` (or the file
named by ``EDGEML_CONFIG`` / ``--config``) < ``EDGEML_*`` environment variables <
explicit overrides (CLI flags). Everything else in edgeml receives a :class:`Settings`
object and never reads ``os.environ`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from edgeml.errors import ConfigError

__all__ = [
    "ENV_VARS",
    "S3Settings",
    "Settings",
    "StoreSettings",
    "TracingSettings",
    "load_settings",
    "read_secret",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(_Strict):
    """How to reach an S3-protocol server (MinIO in production)."""

    endpoint: str = Field("127.0.0.1:9000", description="host:port, or a URL whose scheme sets `secure`")
    region: str = Field("us-east-1", description="region the bucket lives in")
    access_key: SecretStr | None = Field(None, description="access key id")
    secret_key: SecretStr | None = Field(None, description="secret access key")
    secure: bool = Field(True, description="use TLS")
    verify_tls: bool = Field(True, description="check the server certificate")
    ca_file: Path | None = Field(None, description="CA bundle for a private certificate authority")
    timeout_s: float = Field(10.0, gt=0, description="connect and read timeout per request")
    retries: int = Field(2, ge=0, description="retries of a failed request before giving up")
    server_side_encryption: Literal["none", "AES256", "aws:kms"] = Field(
        "none",
        description="ask the server to encrypt every object written (SSE-S3 or SSE-KMS); hipaa: set it",
    )
    kms_key_id: str | None = Field(None, description="KMS key for `aws:kms` (default: the server's)")


class StoreSettings(_Strict):
    """Where the object store lives: ``file:///dir`` or ``s3://bucket[/prefix]``."""

    url: str | None = Field(None, description="store URL; default file://$EDGEML_HOME/store")
    s3: S3Settings = Field(default_factory=S3Settings)


class TracingSettings(_Strict):
    """OpenTelemetry tracing: off by default, console for debugging, OTLP for a collector."""

    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP endpoint, e.g. http://collector:4318")
    service_name: str = "edgeml"
    agent_sample_ratio: float = Field(
        0.01, ge=0, le=1, description="share of agent requests traced when no caller's traceparent decides"
    )


class Settings(_Strict):
    """Everything edgeml is configured by."""

    home: Path = Field(description="appliance home: store, tracking DB, keys, state")
    ray_address: str | None = Field(
        None, description="Ray cluster to use (ray://host:10001 or host:6379); none starts a local one"
    )
    store: StoreSettings = Field(default_factory=StoreSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to a directory under the appliance home."""
        return self.store.url or (self.home / "store").resolve().as_uri()


# Environment variable -> path in the settings tree.
ENV_VARS: Mapping[str, tuple[str, ...]] = {
    "EDGEML_HOME": ("home",),
    "RAY_ADDRESS": ("ray_address",),
    "EDGEML_STORE_URL": ("store", "url"),
    "EDGEML_S3_ENDPOINT": ("store", "s3", "endpoint"),
    "EDGEML_S3_REGION": ("store", "s3", "region"),
    "EDGEML_S3_ACCESS_KEY": ("store", "s3", "access_key"),
    "EDGEML_S3_SECRET_KEY": ("store", "s3", "secret_key"),
    "EDGEML_S3_SECURE": ("store", "s3", "secure"),
    "EDGEML_S3_VERIFY_TLS": ("store", "s3", "verify_tls"),
    "EDGEML_S3_CA_FILE": ("store", "s3", "ca_file"),
    "EDGEML_TRACING": ("tracing", "exporter"),
    "EDGEML_OTLP_ENDPOINT": ("tracing", "otlp_endpoint"),
    "EDGEML_TRACING_AGENT_SAMPLE_RATIO": ("tracing", "agent_sample_ratio"),
}


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"setting {'.'.join(path[:-1])} must be a mapping")
        tree = node
    tree[path[-1]] = value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at its top level")
    return data


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, a config file, the environment and overrides.

    ``env`` defaults to ``os.environ``; tests pass their own mapping.
    """
    env = os.environ if env is None else env
    sources: list[str] = []
    tree: dict[str, Any] = {}

    from_env: dict[str, Any] = {}
    for var, path in ENV_VARS.items():
        if env.get(var, "") != "":
            _set_path(from_env, path, env[var])
            sources.append(var)
    explicit = dict(overrides or {})

    home_value = explicit.get("home") or from_env.get("home") or Path("~/.edgeml")
    home = Path(home_value).expanduser()

    config = config_file or (Path(env["EDGEML_CONFIG"]) if env.get("EDGEML_CONFIG") else None)
    if config is None and (home / "config.yaml").is_file():
        config = home / "config.yaml"
    if config is not None:
        tree = _merge(tree, _read_config_file(config))
        sources.insert(0, str(config))
    tree = _merge(tree, from_env)
    tree = _merge(tree, explicit)
    tree["home"] = Path(tree.get("home", home)).expanduser()

    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        by_path = {path: var for var, path in ENV_VARS.items() if var in sources}
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            where = ".".join(loc)
            if loc in by_path:
                where = f"{where} (from {by_path[loc]})"
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError(
            f"invalid settings: {'; '.join(problems)}",
            hint=f"settings came from: {', '.join(sources) or 'defaults'}",
        ) from exc


def read_secret(name: str, *, purpose: str, env: Mapping[str, str] | None = None) -> str:
    """The value of the environment variable ``name``, which a spec names for a secret.

    Specs never hold secrets; they name the variable (``token_env: CM_API_TOKEN``) and the
    stage asks for it here, at run time.
    """
    env = os.environ if env is None else env
    value = env.get(name)
    if not value:
        raise ConfigError(
            f"{purpose} needs the environment variable {name}, which is not set",
            hint=f"export {name}=... before running",
        )
    return value
