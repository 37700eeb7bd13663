"""Every model family the fault example searches builds a bundle that a device can stage and run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgeml.agent.model import LoadedModel
from edgeml.bundle.build import build_bundle
from edgeml.bundle.keys import KeyRing, export_public, init_keys, load_signer
from edgeml.bundle.verify import fetch_bundle
from edgeml.demo import example_specs
from edgeml.settings import Settings, load_settings
from edgeml.store import store_from_settings
from edgeml.train.run import train
from train.helpers import faults_spec, make_snapshot, simulate_frame, spec_from_dict

from .conftest import local_ray

PROFILE = "x86-64-generic"
FAMILIES = yaml.safe_load(next(p for p in example_specs() if p.name == "pump-faults.yaml").read_text())[
    "search"
]["families"]

#: the families whose default ranges reach big models (300 x 4 boosted trees, 40 epochs) at their lowest
SMALLEST = {"hist_gradient_boosting": {"max_iter": {"choices": [50]}}, "mlp": {"epochs": {"choices": [10]}}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("families-home")
    (home / "specs").mkdir()
    init_keys(home)
    export_public(home, home / "keyring")
    with local_ray():
        yield load_settings({"EDGEML_HOME": str(home)})


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_of_the_example_builds_a_bundle_that_runs(
    home: Settings, family: str, tmp_path: Path
) -> None:
    data = faults_spec(f"faults-{family}", families=[family], trials=1, scheduler="fifo")
    data["search"]["space"] = {k: v for k, v in data["search"].get("space", {}).items() if k == family}
    if family in SMALLEST:  # the low end of the family's own range: a bundle, not a good model, is tested
        data["search"]["space"][family] = data["search"]["space"].get(family, {}) | SMALLEST[family]
    data["gates"] = {}
    spec = spec_from_dict(data, home.home / "specs")
    report = train(spec, home, make_snapshot(spec, home, simulate_frame(machines=3, readings=600)))
    store, ring = store_from_settings(home), KeyRing.from_dir(home.home / "keyring")
    uri = f"models:/{report.model}/{report.version}"
    built = build_bundle(uri, PROFILE, home, store, load_signer(home.home))
    staged = fetch_bundle(store, built.key, ring, tmp_path / "staging")
    model = LoadedModel.open(staged.path, ring)
    model.smoke_test()  # the golden samples' outputs, as the agent checks them before a swap
