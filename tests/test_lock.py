"""The locks hold what pyproject.toml asks for: a change to the dependencies without `make lock` fails here.

`make test` installs requirements.lock exactly (hashes checked) and devices install
requirements-edge.lock, so a requirement the locks do not satisfy would be tested by nobody.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _pins(lock: str) -> dict[str, Version]:
    """name -> pinned version; every entry must carry a hash."""
    text = (ROOT / lock).read_text()
    pins: dict[str, Version] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(entry)
        if match is None:
            continue
        assert "--hash=sha256:" in entry, f"{lock}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    assert pins, f"{lock} pins nothing"
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return [r for r in map(Requirement, wanted) if canonicalize_name(r.name) != "edgeml"]


def _unsatisfied(requirements: list[Requirement], pins: dict[str, Version]) -> list[str]:
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req} but the lock pins {pinned}")
    return problems


def test_the_stack_lock_satisfies_every_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    problems = _unsatisfied(_requirements(*project["optional-dependencies"]), _pins("requirements.lock"))
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_the_edge_lock_satisfies_the_device_extras_with_the_stack_versions() -> None:
    edge, stack = _pins("requirements-edge.lock"), _pins("requirements.lock")
    problems = _unsatisfied(_requirements("edge", "edge-grpc", "openvino"), edge)
    problems += [
        f"{name}: edge lock {version}, stack lock {stack[name]}"
        for name, version in edge.items()
        if name in stack and stack[name] != version
    ]
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_the_edge_lock_stays_light() -> None:
    heavy = {"ray", "torch", "mlflow", "duckdb", "nannyml", "pandas", "scikit-learn"}
    assert not heavy & set(_pins("requirements-edge.lock")), "a device would install the cluster stack"


@pytest.mark.parametrize(
    "line",
    [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")],
)
def test_the_lock_honours_each_constraint(line: str) -> None:
    req = Requirement(line)
    pinned = _pins("requirements.lock")[canonicalize_name(req.name)]
    assert req.specifier.contains(pinned, prereleases=True), f"{line}: the lock pins {pinned}"


def test_the_installed_environment_is_the_lock() -> None:
    from importlib import metadata

    drift = []
    for name, version in _pins("requirements.lock").items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drift.append(f"{name} {version} is not installed")
            continue
        if installed != version:
            drift.append(f"{name}: installed {installed}, locked {version}")
    assert not drift, "the venv is not the lock (rerun `make install`):\n" + "\n".join(drift)
