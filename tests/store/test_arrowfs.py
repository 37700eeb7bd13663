"""A sealed store as a pyarrow filesystem (what Ray Data reads a ``store://`` file source through):
objects read decrypted, listed, pickled to another process, never written."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from edgeml.store.arrowfs import sealed_filesystem
from edgeml.store.local import LocalStore
from edgeml.store.sealed import enable_sealing

CSV = b"ts,patient,temperature\n1,badge-7,37.2\n2,badge-8,38.9\n"


@pytest.fixture
def sealed(tmp_path: Path) -> LocalStore:
    enable_sealing(tmp_path / "store", tmp_path / "home")
    store = LocalStore(tmp_path / "store")
    store.put("landing/ward/a.csv", CSV)
    store.put("landing/ward/deeper/b.csv", CSV)
    parquet = io.BytesIO()
    pq.write_table(pa.table({"patient": ["badge-7"], "temperature": [37.2]}), parquet)
    store.put("lake/ward/part-0.parquet", parquet.getvalue())
    return store


def test_objects_read_decrypted_through_the_filesystem_and_after_pickling(sealed: LocalStore) -> None:
    assert b"badge-7" not in (sealed.root / "landing" / "ward" / "a.csv").read_bytes()
    fs = pickle.loads(pickle.dumps(sealed_filesystem(sealed)))  # as Ray ships it to a worker
    with fs.open_input_stream("landing/ward/a.csv") as f:
        table = pacsv.read_csv(f)
    assert table.column("patient").to_pylist() == ["badge-7", "badge-8"]
    assert pq.read_table("lake/ward/part-0.parquet", filesystem=fs).column("patient").to_pylist() == [
        "badge-7"
    ]
    (info,) = fs.get_file_info(["landing/ward/a.csv"])
    assert (info.type, info.size) == (pafs.FileType.File, len(CSV))
    assert fs.get_file_info(["landing/ward"])[0].type == pafs.FileType.Directory
    assert fs.get_file_info(["landing/none.csv"])[0].type == pafs.FileType.NotFound
    listed = fs.get_file_info(pafs.FileSelector("landing/ward"))
    assert sorted((i.path, i.type) for i in listed) == [
        ("landing/ward/a.csv", pafs.FileType.File),
        ("landing/ward/deeper", pafs.FileType.Directory),
    ]
    every = fs.get_file_info(pafs.FileSelector("landing", recursive=True))
    assert sorted(i.path for i in every) == ["landing/ward/a.csv", "landing/ward/deeper/b.csv"]


def test_the_filesystem_reads_only(sealed: LocalStore) -> None:
    fs = sealed_filesystem(sealed)
    with pytest.raises(FileNotFoundError):
        fs.open_input_file("landing/none.csv")
    with pytest.raises(PermissionError, match="does not write"):
        fs.open_output_stream("landing/ward/c.csv")
    with pytest.raises(PermissionError, match="does not write"):
        fs.delete_file("landing/ward/a.csv")
    assert sealed.get("landing/ward/a.csv") == CSV
