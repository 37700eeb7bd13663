"""Serving the central node with uvicorn, and writing a first config (``edgeml central init``)."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgeml.central.config import CentralConfig
from edgeml.errors import UserError
from edgeml.telemetry.process import tune_runtime

__all__ = ["InitResult", "init_central", "serve"]


def serve(config: CentralConfig) -> None:
    """Run the service until SIGINT/SIGTERM; shutdown drains the write queue and checkpoints.

    One process serves HTTP (no uvicorn workers: they would each need the registry and the
    store) and the telemetry store runs in a second one (:mod:`edgeml.telemetry.process`).
    """
    import uvicorn

    from edgeml.central.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edgeml.observability import setup_tracing
    from edgeml.settings import load_settings

    setup_tracing(load_settings().tracing)  # spans of retraining jobs, with trace ids in the log
    app = create_app(config)
    tune_runtime()
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", access_log=False)


@dataclass(frozen=True)
class InitResult:
    config: Path
    admin_token: Path
    bootstrap_token: Path
    keyring: Path | None = None


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, even briefly
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")


def init_central(
    out: Path, *, store_url: str | None, keyring: Path | None, keys_home: Path | None = None, port: int = 8080
) -> InitResult:
    """A config folder: ``central.yaml``, ``admin.token`` and ``bootstrap.token`` (0600), paths relative.

    Without ``keyring``, the public keys of the appliance at ``keys_home`` (if it has any) are
    exported to ``OUT/keyring``, and the config names that.
    """
    from edgeml.bundle.keys import export_public, list_keys

    files = InitResult(out / "central.yaml", out / "admin.token", out / "bootstrap.token")
    existing = [str(p) for p in (files.config, files.admin_token, files.bootstrap_token) if p.exists()]
    if existing:
        raise UserError(
            f"{', '.join(existing)} already exist; refusing to overwrite them",
            hint="pick another --out folder, or delete those files first",
        )
    out.mkdir(parents=True, exist_ok=True)
    if keyring is None and keys_home is not None and list_keys(keys_home):
        keyring = out / "keyring"
        export_public(keys_home, keyring)
    config: dict[str, object] = {
        "db_path": "telemetry.duckdb",
        "admin_token_file": files.admin_token.name,
        "bootstrap_token_file": files.bootstrap_token.name,
        "host": "127.0.0.1",
        "port": port,
        "retention_days": 30,
    }
    if store_url is not None:
        config["store"] = {"url": store_url}
    if keyring is not None:
        config["keyring"] = "keyring" if keyring == out / "keyring" else str(keyring.resolve())
    if keys_home is not None and list_keys(keys_home) and store_url is not None and keyring is not None:
        # the quality gate is on by default: it signs the pointers it moves with the appliance's key
        config["gate"] = {"keys_home": str(keys_home.resolve())}
    CentralConfig.model_validate(config)  # what we write must load
    _write_secret(files.admin_token, secrets.token_urlsafe(32))
    _write_secret(files.bootstrap_token, secrets.token_urlsafe(32))
    files.config.write_text(yaml.safe_dump(config, sort_keys=False))
    return InitResult(files.config, files.admin_token, files.bootstrap_token, keyring)
