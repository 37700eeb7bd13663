from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.errors import ConfigError
from edgeml.settings import ENV_VARS, Settings, load_settings


def test_defaults_put_everything_under_the_home(tmp_path: Path) -> None:
    s = load_settings({"EDGEML_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.store_url == (tmp_path / "store").as_uri()
    assert s.tracing.exporter == "none"


def test_home_defaults_to_dot_edgeml_in_the_user_home() -> None:
    assert load_settings({}).home == Path("~/.edgeml").expanduser()


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "store:\n  url: s3://from-file\n  s3:\n    endpoint: file-host:9000\n    region: eu-1\n"
    )
    env = {"EDGEML_HOME": str(tmp_path), "EDGEML_S3_ENDPOINT": "env-host:9000"}
    s = load_settings(env)  # config.yaml in the home is picked up by itself
    assert s.store.url == "s3://from-file"
    assert s.store.s3.endpoint == "env-host:9000"  # env beats file
    assert s.store.s3.region == "eu-1"  # file beats default
    s = load_settings(env, overrides={"store": {"url": "file:///override"}})
    assert s.store.url == "file:///override"  # explicit beats everything


def test_config_file_named_by_env(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.yaml"
    config.write_text("tracing:\n  exporter: console\n")
    s = load_settings({"EDGEML_HOME": str(tmp_path), "EDGEML_CONFIG": str(config)})
    assert s.tracing.exporter == "console"


def test_secrets_are_not_printed(tmp_path: Path) -> None:
    s = load_settings({"EDGEML_HOME": str(tmp_path), "EDGEML_S3_SECRET_KEY": "hunter2"})
    assert s.store.s3.secret_key is not None
    assert s.store.s3.secret_key.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"EDGEML_HOME": str(tmp_path), "EDGEML_S3_SECURE": "maybe"})
    assert "EDGEML_S3_SECURE" in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_key_in_config_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("store:\n  bucket: x\n")
    with pytest.raises(ConfigError, match=r"store\.bucket"):
        load_settings({"EDGEML_HOME": str(tmp_path)}, config_file=config)


@pytest.mark.parametrize(
    ("text", "message"),
    [("store: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "mapping"), ("store: 3\n", "store")],
)
def test_broken_config_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings({"EDGEML_HOME": str(tmp_path)}, config_file=config)


def test_missing_config_file_named_explicitly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({"EDGEML_HOME": str(tmp_path)}, config_file=tmp_path / "nope.yaml")


def test_empty_config_file_is_fine(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("")
    assert isinstance(load_settings({"EDGEML_HOME": str(tmp_path)}), Settings)


def test_every_env_var_maps_to_a_real_setting(tmp_path: Path) -> None:
    samples = {
        "EDGEML_S3_SECURE": "false",
        "EDGEML_S3_VERIFY_TLS": "true",
        "EDGEML_TRACING": "console",
        "EDGEML_TRACING_AGENT_SAMPLE_RATIO": "0.5",
        "EDGEML_HOME": str(tmp_path),
    }
    env = {var: samples.get(var, "x") for var in ENV_VARS}
    s = load_settings(env)
    assert s.store.url == "x"
    assert s.store.s3.secure is False
    assert s.tracing.agent_sample_ratio == 0.5
