"""`edgeml central init` and the config it writes (`central run` is exercised in test_delivery)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgeml.bundle.keys import init_keys
from edgeml.central.app import create_app
from edgeml.central.config import load_central_config
from edgeml.cli import main
from edgeml.errors import ConfigError

from .conftest import make_config, running


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_config_that_runs(tmp_path: Path, clean_env: Path) -> None:
    init_keys(clean_env)
    out = tmp_path / "central"
    assert main(["central", "init", "--out", str(out), "--port", "9123"]) == 0
    assert mode(out / "admin.token") == 0o600
    assert mode(out / "bootstrap.token") == 0o600
    config = load_central_config(out / "central.yaml")
    assert config.port == 9123
    assert config.db_path == out.resolve() / "telemetry.duckdb"  # relative to the config's folder
    assert config.keyring == out.resolve() / "keyring"
    assert list(config.keyring.glob("*.pub"))
    assert config.store is not None
    assert config.store.url == (clean_env / "store").resolve().as_uri()
    assert len(config.admin_token()) >= 40
    assert config.admin_token() != config.bootstrap_token()
    assert config.gate.keys_home == clean_env.resolve()
    assert config.gate_on  # the quality gate is on by default once the node can sign
    with running(config) as central:  # the folder is all it takes
        assert central.client.get("/readyz").status_code == 200
    # a second init never overwrites tokens
    assert main(["central", "init", "--out", str(out)]) == 2
    assert load_central_config(out / "central.yaml").admin_token() == config.admin_token()


def test_overrides_and_config_errors(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("secret\n")
    (tmp_path / "admin.token").chmod(0o644)
    path = tmp_path / "central.yaml"
    path.write_text("db_path: t.duckdb\nadmin_token_file: admin.token\n")
    config = load_central_config(path, host="127.0.0.2", port=None)
    assert (config.host, config.port) == ("127.0.0.2", 8080)
    with pytest.raises(ConfigError, match="readable by others"):
        create_app(config)
    path.write_text("db_path: t.duckdb\nadmin_token_file: admin.token\nport: 80000\nextra: 1\n")
    with pytest.raises(ConfigError, match=r"port: .*; extra: Extra inputs are not permitted"):
        load_central_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_central_config(path)


def test_the_database_memory_is_set_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "central.yaml"
    path.write_text("db_path: t.duckdb\nadmin_token_file: admin.token\ndb_memory: 32MB\n")
    with pytest.raises(ConfigError, match="db_memory: Input should be greater than or equal to 67108864"):
        load_central_config(path)
    config = make_config(tmp_path / "central", db_memory="256MiB")
    with running(config) as central:
        setting = central.store.fetch("SELECT current_setting('memory_limit')")
    assert setting == [("256.0 MiB",)]


def test_status_shows_the_policy_and_says_when_there_is_nothing_to_compare(
    tmp_path: Path, clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "central"
    assert main(["central", "init", "--out", str(out)]) == 0  # no key yet: no gate
    capsys.readouterr()
    assert main(["central", "status", "--config", str(out / "central.yaml"), "--model", "pumps"]) == 0
    shown = capsys.readouterr().out
    assert "retraining: off (no retrain.spec in central.yaml)" in shown
    assert "quality gate: off: it needs store, keyring and gate.keys_home" in shown
    assert "each labelled row counts 3x in training" in shown
    assert "no champion comparison yet" in shown
    assert main(["central", "status", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
