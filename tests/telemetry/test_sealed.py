"""The telemetry file sealed (hipaa): no value readable in its bytes, the node reopens it, keys checked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb
import pytest

from central.conftest import make_config, running
from edgeml.central.config import CentralConfig
from edgeml.cli import main
from edgeml.errors import StoreConfigError
from edgeml.telemetry.db.sealed import (
    HTTPFS_WHEEL,
    UNSAFE_CRYPTO_ENV,
    load_crypto,
    packaged_httpfs,
    seal_telemetry_file,
)
from edgeml.telemetry.db.store import DuckDBStore

from .batches import make_batch

#: a value that must not be readable in a sealed file
WARD = "oncology-ward-7-north"


@pytest.fixture
def crypto(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSSL through the httpfs wheel the lock installs (requirements.lock pins it beside DuckDB)."""
    monkeypatch.delenv(UNSAFE_CRYPTO_ENV, raising=False)
    assert packaged_httpfs() is not None, f"{HTTPFS_WHEEL} for DuckDB {duckdb.__version__} is not installed"


def _fill(path: Path) -> list[object]:
    with DuckDBStore(path) as store:
        store.register_device(device_id="dev-1", group=WARD, profile="x86-64-generic", model="pump")
        for _ in range(20):
            store.ingest(make_batch(group=WARD))
        return list(store.batches())


def _on_disk(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and "keys" not in p.parts)


def test_a_sealed_file_holds_no_readable_value_and_reopens(tmp_path: Path, crypto: None) -> None:
    clear = tmp_path / "clear" / "t.duckdb"
    _fill(clear)
    assert WARD.encode() in _on_disk(clear.parent)  # the check below can see a value in clear

    sealed = tmp_path / "sealed" / "t.duckdb"
    key = seal_telemetry_file(sealed, tmp_path / "home")
    assert key == tmp_path / "home" / "keys" / "telemetry.key"
    assert os.stat(key).st_mode & 0o777 == 0o600
    sent = _fill(sealed)
    assert WARD.encode() not in _on_disk(sealed.parent)
    assert b"pump" not in sealed.read_bytes()

    with DuckDBStore(sealed) as store:  # the key comes from the marker beside the file
        assert list(store.batches()) == sent
        assert store.authenticate("not a token") is None

    with pytest.raises(duckdb.Error, match="without a key"):  # DuckDB itself refuses it keyless
        duckdb.connect().execute(f"ATTACH '{sealed}' AS t (READ_ONLY)")
    marker = sealed.with_name(sealed.name + ".sealed.json")
    moved = marker.rename(tmp_path / "marker.json")
    with pytest.raises(StoreConfigError, match="without a key"):
        DuckDBStore(sealed)
    moved.rename(marker)

    right = key.read_bytes()
    key.write_bytes(bytes(32))  # another 256-bit key
    with pytest.raises(StoreConfigError, match="Wrong encryption key"):
        DuckDBStore(sealed)
    key.write_bytes(right)

    os.chmod(key, 0o644)
    with pytest.raises(StoreConfigError, match="readable by others"):
        DuckDBStore(sealed)


def test_a_file_in_clear_is_not_sealed_afterwards(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    _fill(path)
    with pytest.raises(StoreConfigError, match="already exists in clear"):
        seal_telemetry_file(path, tmp_path / "home")


def test_the_locked_httpfs_wheel_is_loaded_from_its_file_and_no_weak_crypto(
    tmp_path: Path, crypto: None
) -> None:
    packaged = packaged_httpfs()
    assert packaged is not None
    con = duckdb.connect(config={"autoinstall_known_extensions": False})  # nothing fetched
    load_crypto(con, unsafe=False)
    loaded = "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
    assert con.execute(loaded).fetchall() == [(True,)]
    assert con.execute("SELECT current_setting('force_mbedtls_unsafe')").fetchall() == [(False,)]
    path = tmp_path / "t.duckdb"
    seal_telemetry_file(path, tmp_path / "home")
    DuckDBStore(path).close()
    assert path.exists()


def test_without_openssl_the_node_says_how_to_get_it_instead_of_encrypting_weakly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UNSAFE_CRYPTO_ENV, raising=False)
    monkeypatch.setitem(sys.modules, HTTPFS_WHEEL.replace("-", "_"), None)  # the wheel not installed
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # and no httpfs in DuckDB's extension folder
    assert packaged_httpfs() is None
    path = tmp_path / "t.duckdb"
    seal_telemetry_file(path, tmp_path / "home")
    with pytest.raises(StoreConfigError, match="httpfs") as error:
        DuckDBStore(path)
    hint = error.value.hint or ""
    assert "INSTALL httpfs" in hint
    assert f"pip install {HTTPFS_WHEEL}=={duckdb.__version__}" in hint
    assert not path.exists()  # nothing was written in clear instead


@pytest.mark.slow
def test_central_seal_then_the_node_runs_on_the_sealed_file_and_restarts(
    tmp_path: Path, clean_env: Path, crypto: None
) -> None:
    config = make_config(tmp_path / "central")
    yaml = tmp_path / "central" / "central.yaml"
    yaml.write_text(
        "\n".join(
            f"{k}: {v}"
            for k, v in {
                "db_path": config.db_path,
                "admin_token_file": config.admin_token_file,
                "bootstrap_token_file": config.bootstrap_token_file,
            }.items()
        )
        + "\n"
    )
    assert main(["central", "seal", "--config", str(yaml)]) == 0
    assert (clean_env / "keys" / "telemetry.key").exists()
    assert main(["central", "seal", "--config", str(yaml)]) == 2  # sealed already
    for n in range(2):  # the first start creates the file, the second reopens it
        with running(config) as central:
            token = central.register(f"dev-{n}", group=WARD)
            assert central.post(make_batch(f"dev-{n}", group=WARD), token).status_code == 200
            assert len(central.store.batches()) == n + 1
    assert WARD.encode() not in _on_disk(config.db_path.parent)


def _hipaa_node(tmp_path: Path, compliance: str = "hipaa") -> CentralConfig:
    """A node whose store holds a signed ``pump`` v1 under ``compliance``, binned as the test batches are."""
    from agent.conftest import with_golden
    from bundle.conftest import make_manifest, write_model
    from edgeml.bundle.build import publish_bundle
    from edgeml.bundle.keys import export_public, init_keys, load_signer
    from edgeml.bundle.manifest import CategoryCounts, Histogram
    from edgeml.store.local import LocalStore

    home, ring = tmp_path / "publisher", tmp_path / "keyring"
    init_keys(home)
    export_public(home, ring)
    store = LocalStore(tmp_path / "store")
    folder = tmp_path / "build"
    manifest = with_golden(make_manifest(write_model(folder, 1), 1, model="pump"), folder)
    features = {
        "a": Histogram(edges=[0.0, 1.0], counts=[0, 0, 0]),
        "machine": CategoryCounts(values=["m1", "m2"], counts=[0, 0, 0]),
    }
    reference = manifest.reference.model_copy(update={"features": features})
    publish_bundle(
        store,
        load_signer(home),
        manifest.model_copy(update={"compliance": compliance, "reference": reference}),
        folder,
    )
    return make_config(tmp_path / "central", store={"url": store.url}, keyring=str(ring))


@pytest.mark.slow
def test_a_node_in_clear_refuses_a_hipaa_models_batches_and_a_sealed_one_keeps_them(
    tmp_path: Path, crypto: None
) -> None:
    config = _hipaa_node(tmp_path)
    with running(config) as central:
        token = central.register("dev-1", group=WARD)
        answer = central.post(make_batch("dev-1", group=WARD), token)
        assert answer.status_code == 503, answer.text  # the device keeps the batch and retries
        assert "compliance hipaa" in answer.text
        assert "not encrypted at rest" in answer.text
        assert "edgeml central seal" in answer.text
        assert central.store.batches() == []
    config.db_path.unlink()  # a new file, sealed before the node starts
    seal_telemetry_file(config.db_path, tmp_path / "node-home")
    with running(config) as central:
        token = central.register("dev-1", group=WARD)
        assert central.post(make_batch("dev-1", group=WARD), token).status_code == 200
        assert len(central.store.batches()) == 1
    assert WARD.encode() not in _on_disk(config.db_path.parent)


def test_a_node_in_clear_keeps_other_modes_batches(tmp_path: Path) -> None:
    with running(_hipaa_node(tmp_path, compliance="gdpr")) as central:
        token = central.register("dev-1", group=WARD)
        assert central.post(make_batch("dev-1", group=WARD), token).status_code == 200
        assert len(central.store.batches()) == 1
