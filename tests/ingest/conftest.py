"""Fixtures for the ingestion tests: one local Ray for the session, specs and sensor data built here.

Third-party warnings that pytest's ``error`` filter would turn into failures, with Ray 2.60
and pandas 3.1 (both are DeprecationWarnings, which users never see by default):

- ``ray.data.context``: building the default ``DataContext`` sets deprecated fields
  (``use_push_based_shuffle``, ``use_polars``) and warns about them. ``ray_local`` builds the
  singleton once with those warnings ignored.
- ``ray.data._internal.pandas_block`` calls ``DataFrame.reset_index(inplace=True)``, which
  pandas 3.1 deprecates (``Pandas4Warning``); it runs in the driver when metadata is collected.
  Tests that use ``ray_local`` ignore exactly that message.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from edgeml.simulate.sensors import SensorSimulation, simulate_sensors, write_csv
from edgeml.spec import Spec, parse_spec
from raycluster import shared_local_ray

RAY_WARNINGS = (
    "ignore:The inplace keyword in DataFrame.reset_index is deprecated:DeprecationWarning",
    "ignore::DeprecationWarning:ray.data.context",
)

#: the simulator's columns, as a spec schema (is_anomaly is left out: it shows up as ignored)
SENSOR_SCHEMA = """\
schema:
  timestamp: ts
  entity: machine_id
  columns:
    msg_id: {type: string, nullable: false}
    ts: {type: timestamp, nullable: false}
    machine_id: {type: string, nullable: false}
    temperature: {type: float}
    vibration: {type: float}
    pressure: {type: float}
    rpm: {type: float}
    power_kw: {type: float}
    fault: {type: category, values: [ok, bearing_wear, overheating, pressure_leak], nullable: false}
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            for spec in RAY_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture
def ray_local() -> None:
    """The process's local Ray (2 CPUs, shared with every later test; see ``shared_local_ray``)."""
    shared_local_ray()  # on loopback, as the appliance starts it
    from ray.data import DataContext

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray.data.context")
        DataContext.get_current()


def _sources_yaml(*sources: str) -> str:
    """A ``sources:`` block from one flow mapping per source (``{name: a, kind: file, ...}``)."""
    return "sources:\n" + "".join(f"  - {s}\n" for s in sources)


def _spec_text(sources: Sequence[str], name: str, schema: str) -> str:
    return (
        f"name: {name}\n{_sources_yaml(*sources)}{schema}task: clustering\nsearch: {{families: [kmeans]}}\n"
    )


def _make_spec(
    base_dir: Path | None, *sources: str, name: str = "pumps", schema: str = SENSOR_SCHEMA
) -> Spec:
    """A valid label-free spec over ``sources`` and ``schema``; relative paths resolve against base_dir."""
    return parse_spec(_spec_text(sources, name, schema), source=f"<{name}>", base_dir=base_dir)


def _write_spec_file(folder: Path, *sources: str, name: str = "pumps") -> Path:
    """The same spec as ``make_spec``, written to ``folder/spec.yaml``."""
    path = folder / "spec.yaml"
    path.write_text(_spec_text(sources, name, SENSOR_SCHEMA), encoding="utf-8")
    return path


def _write_sensor_csvs(
    folder: Path,
    *,
    files: int = 2,
    machines: int = 4,
    readings: int = 250,
    seed: int = 0,
    stem: str = "pumps",
) -> tuple[list[Path], int]:
    """Simulated readings split over ``files`` CSV files; (paths, total rows)."""
    cols = simulate_sensors(SensorSimulation(machines=machines, readings=readings, seed=seed))
    n = len(cols["msg_id"])
    bounds = [round(i * n / files) for i in range(files + 1)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        chunk = {k: v[bounds[i] : bounds[i + 1]] for k, v in cols.items()}
        path = folder / f"{stem}-{i:02d}.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            write_csv(chunk, out)
        paths.append(path)
    return paths, n


# The helpers, as fixtures (test modules do not import from conftest).


@pytest.fixture
def make_spec() -> Callable[..., Spec]:
    """``make_spec(base_dir, "{name: a, kind: file, path: x/*.csv}", ..., name=, schema=)``."""
    return _make_spec


@pytest.fixture
def write_spec_file() -> Callable[..., Path]:
    """``write_spec_file(folder, *sources, name=)`` -> path of ``folder/spec.yaml``."""
    return _write_spec_file


@pytest.fixture
def sensor_csvs() -> Callable[..., tuple[list[Path], int]]:
    """``sensor_csvs(folder, files=, machines=, readings=, seed=, stem=)`` -> (paths, total rows)."""
    return _write_sensor_csvs
