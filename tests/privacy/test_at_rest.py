"""hipaa: rows land only where they are encrypted at rest — an empty local store is sealed on first
landing, a store holding clear objects and an S3 store asking no server-side encryption are refused
before anything is written; other modes land as before."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.ingest.lake import load_snapshot, read_parts
from edgeml.privacy.at_rest import require_encryption_at_rest
from edgeml.settings import Settings, load_settings
from edgeml.store import store_from_settings
from train.helpers import faults_spec, simulate_frame, spec_from_dict


def _spec_file(folder: Path, compliance: str) -> Path:
    """A spec whose file source is a CSV outside the store (a store:// source would fill it first)."""
    frame = simulate_frame(machines=2, readings=60)
    frame.to_csv(folder / "history.csv", index=False)
    data = faults_spec("ward-pumps")
    data["sources"] = [{"name": "history", "kind": "file", "path": str(folder / "history.csv")}]
    data["compliance"] = compliance
    spec_from_dict(data, folder)
    return folder / "ward-pumps.yaml"


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_hipaa_ingest_seals_an_empty_store_and_writes_nothing_in_clear(
    clean_env: Path, settings: Settings, tmp_path: Path
) -> None:
    spec_file = _spec_file(tmp_path, "hipaa")
    assert main(["ingest", str(spec_file)]) == 0
    root = settings.home / "store"
    key = settings.home / "keys" / "store.key"
    assert (root.parent / "store.sealed.json").is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any("lake" in p.parts for p in files)
    for path in files:  # no parquet magic, no machine id: every object is ciphertext
        data = path.read_bytes()
        assert b"PAR1" not in data, path
        assert b"pump-" not in data, path
    store = store_from_settings(settings)  # read back through the key
    snapshot = load_snapshot(store, "ward-pumps")
    assert read_parts(store, snapshot.parts).num_rows == snapshot.rows == 120
    assert main(["ingest", str(spec_file)]) == 0  # a sealed store is used as it is


def test_a_hipaa_ingest_into_a_store_holding_clear_objects_is_refused(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = _spec_file(tmp_path, "hipaa")
    store = store_from_settings(settings)
    store.put("notes/readme.txt", b"written before hipaa")
    assert main(["ingest", str(spec_file)]) == 2
    err = capsys.readouterr().err
    assert "compliance hipaa" in err
    assert "holds objects in clear" in err
    assert "nothing was written" in err
    assert store.keys() == ["notes/readme.txt"]
    assert not (settings.home / "store.sealed.json").exists()
    assert not (settings.home / "keys" / "store.key").exists()


def test_other_modes_land_in_a_clear_store_as_before(
    clean_env: Path, settings: Settings, tmp_path: Path
) -> None:
    spec = spec_from_dict({**faults_spec("plain-pumps"), "compliance": "gdpr"}, tmp_path)
    store_from_settings(settings).put("notes/readme.txt", b"clear")
    assert require_encryption_at_rest(spec, settings) is None
    assert not (settings.home / "store.sealed.json").exists()


def test_hipaa_on_s3_needs_server_side_encryption(tmp_path: Path) -> None:
    spec = spec_from_dict({**faults_spec("ward-pumps"), "compliance": "hipaa"}, tmp_path)
    env = {"EDGEML_HOME": str(tmp_path / "home"), "EDGEML_STORE_URL": "s3://ward-data/lake"}
    with pytest.raises(UserError, match="asks no server-side encryption") as refused:
        require_encryption_at_rest(spec, load_settings(env))
    assert "store.s3.server_side_encryption: AES256" in (refused.value.hint or "")
    plain = load_settings(env)
    for sse in ("AES256", "aws:kms"):
        s3 = plain.store.s3.model_copy(update={"server_side_encryption": sse})
        settings = plain.model_copy(update={"store": plain.store.model_copy(update={"s3": s3})})
        assert require_encryption_at_rest(spec, settings) is None


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_clear_store_sealed_in_place_takes_the_hipaa_run_and_reads_the_same_rows(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store a `none` spec filled (its landing CSVs a store:// source reads, its lake parts) is
    refused under hipaa, naming `edgeml store seal`; sealed in place, the hipaa run reads the landing
    files through the key and the lake holds the same rows."""
    data = faults_spec("ward-pumps")  # source: store://landing/pumps/*.csv
    args = ["--machines", "2", "--readings", "60", "--seed", "3", "--store-key", "landing/pumps/a.csv"]
    assert main(["simulate", "sensors", *args]) == 0
    spec_from_dict({**data, "compliance": "none"}, tmp_path)
    assert main(["ingest", str(tmp_path / "ward-pumps.yaml")]) == 0
    store = store_from_settings(settings)
    before = read_parts(store, load_snapshot(store, "ward-pumps").parts)

    spec_from_dict({**data, "compliance": "hipaa"}, tmp_path)
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "ward-pumps.yaml")]) == 2
    assert "edgeml store seal" in capsys.readouterr().err

    assert main(["store", "seal"]) == 0
    assert main(["ingest", str(tmp_path / "ward-pumps.yaml")]) == 0
    for path in (p for p in (settings.home / "store").rglob("*") if p.is_file()):
        assert path.read_bytes().startswith(b"EDGEMLS1"), path
    store = store_from_settings(settings)
    after = read_parts(store, load_snapshot(store, "ward-pumps").parts)
    assert after.num_rows == before.num_rows == 120
    assert after.sort_by("msg_id").equals(before.sort_by("msg_id"))
