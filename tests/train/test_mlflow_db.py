"""A new SQLite MLflow store seeded from the empty schema is the store MLflow would have made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgeml.train.mlflow_db import seed_sqlite_store


def _schema(path: Path) -> tuple[list[tuple[str, str, list[str]]], list[tuple[str]]]:
    """Every table, index and trigger with its definition's lines (in any order: two runs of the
    migrations list a table's constraints in different orders) and the Alembic revision."""
    with sqlite3.connect(path) as db:
        objects = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    lines = [
        (kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
        for kind, name, sql in objects
    ]
    return lines, revision


def test_a_seeded_store_has_mlflows_own_schema_and_works(tmp_path: Path) -> None:
    import mlflow

    migrated, seeded = tmp_path / "migrated", tmp_path / "seeded"
    migrated.mkdir()
    seeded.mkdir()
    mlflow.MlflowClient(f"sqlite:///{migrated / 'mlflow.db'}").search_experiments()  # every migration

    uri = f"sqlite:///{seeded / 'mlflow.db'}"
    seed_sqlite_store(uri)
    assert (seeded / "mlflow.db").is_file()
    assert _schema(seeded / "mlflow.db") == _schema(migrated / "mlflow.db")
    assert not [p.name for p in seeded.iterdir() if p.name != "mlflow.db"]  # no scratch file left

    client = mlflow.MlflowClient(uri)
    [default] = client.search_experiments()
    assert default.name == "Default"
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "f1", 0.5)
    client.create_registered_model("m")
    version = client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("m", "champion", version.version)
    assert client.get_model_version_by_alias("m", "champion").run_id == run.info.run_id
    assert client.get_run(run.info.run_id).data.metrics == {"f1": 0.5}


def test_an_existing_store_and_other_uris_are_left_alone(tmp_path: Path) -> None:
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"not touched")
    seed_sqlite_store(f"sqlite:///{existing}")
    assert existing.read_bytes() == b"not touched"

    seed_sqlite_store(f"sqlite:///{tmp_path / 'missing-folder' / 'mlflow.db'}")
    assert not (tmp_path / "missing-folder").exists()  # MLflow's own error, later, names the path

    seed_sqlite_store(f"sqlite:///{tmp_path / 'options.db'}?timeout=30")  # a URI with options: not a path
    seed_sqlite_store("http://127.0.0.1:5000")
    seed_sqlite_store(f"postgresql://u@127.0.0.1/{tmp_path.name}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]
