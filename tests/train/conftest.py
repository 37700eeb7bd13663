"""Fixtures for the training stage.

Snapshots are made without Ray (see helpers.make_snapshot). Training itself needs Ray: one local
Ray is started per session and every ``ray_session`` reuses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeml.settings import Settings, load_settings
from edgeml.train.data import load_training_data
from raycluster import shared_local_ray

from .helpers import SPECS, TaskData, make_snapshot, spec_from_dict, task_frame


@pytest.fixture(autouse=True)
def one_thread_per_library() -> Iterator[None]:
    """Training in this process uses one thread per native pool (OpenMP, BLAS, torch's own).

    Trials already run one core each under Ray; on a shared 2-core machine, spinning OpenMP
    pools in the test process (sklearn's and torch's, both loaded) only slow everything down.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def ray_cluster() -> None:
    """The process's local Ray (see ``shared_local_ray``); ``ray_session`` sees it running and reuses it."""
    shared_local_ray()


@dataclass
class TrainHome:
    """An appliance home shared by the end-to-end tests (one MLflow DB, created once)."""

    home: Path
    specs: Path

    @property
    def settings(self) -> Settings:
        return load_settings({"EDGEML_HOME": str(self.home)})


@pytest.fixture(scope="session")
def train_home(tmp_path_factory: pytest.TempPathFactory) -> TrainHome:
    root = tmp_path_factory.mktemp("train")
    (root / "home").mkdir()
    (root / "specs").mkdir()
    return TrainHome(root / "home", root / "specs")


@pytest.fixture
def train_env(monkeypatch: pytest.MonkeyPatch, train_home: TrainHome) -> TrainHome:
    """The CLI pointed at the shared training home, free of the caller's EDGEML_* variables."""
    for name in list(os.environ):
        if name.startswith("EDGEML_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EDGEML_HOME", str(train_home.home))
    return train_home


@pytest.fixture(scope="session")
def task_data(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], TaskData]:
    """Split training data per task, built once per session (no Ray needed)."""
    root = tmp_path_factory.mktemp("task-data")
    settings = load_settings({"EDGEML_HOME": str(root / "home")})
    cache: dict[str, TaskData] = {}

    def get(task: str) -> TaskData:
        if task not in cache:
            spec = spec_from_dict(SPECS[task](), root)
            make_snapshot(spec, settings, task_frame(task))
            cache[task] = TaskData(spec, load_training_data(spec, settings))
        return cache[task]

    return get
