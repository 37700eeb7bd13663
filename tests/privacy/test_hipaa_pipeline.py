"""A hipaa pipeline run end to end, from a fresh appliance home: ``edgeml pipeline run`` on a spec
whose data holds a pii column, then the guarantees checked on what that run left behind — the store
sealed, every read of lake data on the audit trail, the signed manifest and MLflow's input example
holding no one's row, MLflow's kept holdout rows sealed and no value of them anywhere in clear under
its artifacts or in its database."""

from __future__ import annotations

import io
import json
import sqlite3
import struct
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from edgeml.audit import AuditLog
from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.export.run import load_kept_artifacts
from edgeml.ingest.lake import load_snapshot, read_parts
from edgeml.privacy.sealed_rows import KeptRowsKey, kept_rows_key, read_rows
from edgeml.settings import Settings
from edgeml.store import store_from_settings
from edgeml.store.sealed import Sealer
from train.helpers import cheap_faults, simulate_frame

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

NAME = "ward-pumps"


def _data(folder: Path) -> pd.DataFrame:
    """Three pumps' readings with the badge of the operator on shift (pii) on every row."""
    frame = simulate_frame(machines=3, readings=400)
    frame["operator"] = [f"badge-{n % 9:02d}-nurse" for n in range(len(frame))]
    frame.to_csv(folder / "ward.csv", index=False)
    return frame


def _spec(folder: Path) -> Path:
    data = cheap_faults(NAME)
    data["sources"] = [{"name": "ward", "kind": "file", "path": str(folder / "ward.csv")}]
    data["profiles"] = ["x86-64-generic"]
    data["compliance"] = "hipaa"
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _rows(frame: pd.DataFrame, columns: list[str]) -> set[tuple[object, ...]]:
    return {tuple(r) for r in frame[columns].itertuples(index=False)}


def test_a_hipaa_pipeline_run_keeps_every_guarantee_on_its_artefacts(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _data(tmp_path)
    code = main(["pipeline", "run", str(_spec(tmp_path))])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    store = store_from_settings(settings)

    # sealed at rest: every object on disk is ciphertext, read back whole through the key
    files = [p for p in (settings.home / "store").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".parquet") for p in files)
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b"EDGEMLS1"), path
        for clear in (b"PAR1", b"badge-", b"pump-0"):
            assert clear not in data, path
        with pytest.raises(pa.ArrowInvalid, match="magic bytes"):
            pq.read_table(path)
    snapshot = load_snapshot(store, NAME)
    assert read_parts(store, snapshot.parts).num_rows == len(frame)

    # every stage that read lake data left a record: who, what, when, by this command
    trail = AuditLog(store)
    assert trail.verify() == []
    reads = [e for e in trail.entries() if e.action == "data.read"]
    stages = [e.after["stage"] for e in reads]
    assert stages[:2] == ["lake", "validated"]  # validation, then feature building
    assert set(stages[2:]) == {"features"}  # training, export and bundle building
    assert len(stages) >= 4
    assert {(e.subject, e.after["snapshot"], e.after["command"]) for e in reads} == {
        (NAME, snapshot.id, "edgeml pipeline run")
    }

    # the signed manifest: no pii input, no badge anywhere, and golden rows that are no one's
    manifest_bytes = store.get(f"bundles/{NAME}/1/x86-64-generic/manifest.json")
    assert b"badge-" not in manifest_bytes
    manifest = json.loads(manifest_bytes)
    assert manifest["compliance"] == "hipaa"
    names = [f["name"] for f in manifest["inputs"]]
    assert "operator" not in names
    golden = pd.DataFrame(manifest["golden"]["inputs"])
    assert len(golden) >= 1
    features = store.get(f"catalog/{NAME}/features/{snapshot.id}.json")
    table = pd.concat(
        pq.read_table(io.BytesIO(store.get(p["key"]))).to_pandas() for p in json.loads(features)["parts"]
    )
    numeric = [n for n in names if n in table and pd.api.types.is_float_dtype(table[n])]
    assert numeric
    for name in numeric:  # every number drawn off the values the data holds
        seen = set(table[name].dropna().round(6))
        assert not set(golden[name].dropna().round(6)) & seen, name
    assert not _rows(golden, numeric) & _rows(table, numeric)

    # MLflow's input example (both files) is one synthesised row, no one's
    examples = list((settings.home / "mlartifacts").rglob("input_example.json"))
    assert examples
    for path in examples:
        text = path.read_text() + (path.parent / "serving_input_example.json").read_text()
        assert "badge-" not in text
        example = json.loads(path.read_text())
        row = dict(zip(example["columns"], example["data"][0], strict=True))
        for name in numeric:
            if name in row and row[name] is not None:
                assert round(float(row[name]), 6) not in set(table[name].dropna().round(6)), name

    # MLflow keeps the holdout rows sealed with the store's key (export and bundle building above
    # opened them to prove parity); no file under its artifacts, nor its database, holds a value of
    # them in clear
    artifacts = [p for p in (settings.home / "mlartifacts").rglob("*") if p.is_file()]
    (kept,) = [p for p in artifacts if p.name == "holdout.parquet"]
    run_id = kept.parents[2].name
    assert kept.read_bytes().startswith(b"EDGEMLS1")
    key = kept_rows_key(settings)
    assert "the store's key" in key.described
    rows = read_rows(kept, run_id=run_id, artifact="edgeml/holdout.parquet", key=key)
    assert len(rows) > 0
    assert _rows(rows, numeric) <= _rows(table, numeric)  # feature rows, now readable only with the key
    values = {float(v) for name in numeric for v in rows[name].dropna()}
    doubles = [struct.pack("<d", v) for v in values]
    texts = [t.encode() for t in {repr(v) for v in values} | {f"{v:.6g}" for v in values} if len(t) >= 6]
    for path in artifacts:
        data = path.read_bytes()
        for clear in (b"PAR1", b"badge-"):
            assert clear not in data, path
        assert not [t for t in texts if t in data], path
        found = [d for d in doubles if d in data]
        if path.name == "model.skops":  # a forest's thresholds are midpoints of readings: a few meet one
            assert len(found) <= len(doubles) // 100, path
            for name in numeric:  # and no column of rows is kept
                column = rows[name].dropna().to_numpy(dtype="<f8")
                assert not [i for i in range(len(column) - 2) if column[i : i + 3].tobytes() in data], name
        else:
            assert not found, path
    with sqlite3.connect(settings.home / "mlflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        cells = [
            str(cell).encode() if not isinstance(cell, bytes) else cell
            for t in tables
            for row in db.execute(f'SELECT * FROM "{t}"')  # sqlite_master's names
            for cell in row
            if cell is not None
        ]
    assert not [c for c in cells if b"badge-" in c]
    assert not [c for c in cells for t in texts if t in c]
    assert not [c for c in cells for d in doubles if d in c]
    # without the key, or with another appliance's, the rows are refused, naming the key
    with pytest.raises(UserError, match=r"sealed \(compliance hipaa\) and there is no key"):
        load_kept_artifacts(run_id, tmp_path / "keyless")
    other = KeptRowsKey(Sealer(bytes(32)), "another key")
    with pytest.raises(UserError, match="another key does not open them"):
        read_rows(kept, run_id=run_id, artifact="edgeml/holdout.parquet", key=other)
