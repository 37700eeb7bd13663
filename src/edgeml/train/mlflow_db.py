"""A new SQLite MLflow store starts from an empty schema made once per process.

MLflow builds a new SQLite store by running every Alembic migration since its first release
(dozens of table rebuilds: 3-8 s on 2 cores). The resulting empty schema depends only on the
installed MLflow, so the first new store in a process pays for it in a scratch file and every
later new store (another appliance home: a test, a benchmark) is a copy of those bytes.
MLflow then opens the copy as it would any up-to-date store: it checks the schema is at its
head revision and adds its Default experiment itself, with this store's own artifact root.
A store that already exists, or a URI that is not a local SQLite file, is left alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path

__all__ = ["seed_sqlite_store"]


@functools.cache
def _empty_schema() -> bytes | None:
    """MLflow's up-to-date empty schema as SQLite file bytes, or None when MLflow cannot make one."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    with tempfile.TemporaryDirectory(prefix="edgeml-mlflow-") as folder:
        path = Path(folder) / "empty.db"
        engine = sqlalchemy.create_engine(f"sqlite:///{path}")
        try:
            _initialize_tables(engine)  # type: ignore[no-untyped-call]
        finally:
            engine.dispose()
        return path.read_bytes() or None


def seed_sqlite_store(uri: str) -> None:
    """Create the SQLite file ``uri`` names from the empty schema, unless it exists already."""
    if not uri.startswith("sqlite:///") or "?" in uri or uri == "sqlite:///:memory:":
        return  # a file path only: a URI with options, or an in-memory store, is MLflow's to make
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists() or not path.parent.is_dir():
        return  # an existing store is MLflow's to open; a missing folder is MLflow's error to give
    try:
        schema = _empty_schema()
    except ImportError:
        return  # an MLflow without this private helper: it migrates the new file itself
    if schema is None:
        return
    fd, scratch = tempfile.mkstemp(prefix=".mlflow-", suffix=".db", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(schema)
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs stays
            os.link(scratch, path)
    finally:
        os.unlink(scratch)
