"""Example data sets from packages, and the example specs that read them, from the data to an agent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from edgeml.cli import main
from edgeml.datasets import DATASETS, maintenance_notes
from edgeml.demo import example_specs
from test_support import answers_as_the_model

EXAMPLES = {p.stem: p for p in example_specs()}
#: one modest configuration per family (the default ranges reach 300 trees, 3 x 128 units, 40 epochs)
CHEAP = {
    "random_forest": {"n_estimators": {"choices": [30]}},
    "hist_gradient_boosting": {"max_iter": {"choices": [50]}},
    "mlp": {"epochs": {"choices": [10]}, "hidden_units": {"choices": [32]}, "layers": {"choices": [2]}},
}
#: example spec -> the data set it reads (pump-clusters reads simulated pumps)
READS = {"titanic-survival": "titanic", "housing-value": "housing", "maintenance-notes": "maintenance-notes"}


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_data_set_loads_with_identifier_columns(name: str) -> None:
    frame = DATASETS[name]()
    assert len(frame) >= 100
    for column in frame.columns:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", column), column


@pytest.mark.parametrize("example", list(READS))
def test_each_example_spec_describes_its_data_set(example: str) -> None:
    spec = yaml.safe_load(EXAMPLES[example].read_text())
    frame = DATASETS[READS[example]]()
    assert set(spec["schema"]["columns"]) == set(frame.columns)
    assert spec["sources"][0]["path"] == f"store://landing/{READS[example]}/*.csv"


def test_the_titanic_data_has_categories_and_gaps() -> None:
    frame = DATASETS["titanic"]()
    assert frame["age"].isna().mean() > 0.1
    assert frame["embarked"].isna().sum() > 0
    assert set(frame["sex"].dropna()) == {"male", "female"}


def test_maintenance_notes_are_noisy_like_real_ones() -> None:
    frame = maintenance_notes(rows=2000, seed=3)
    notes = frame["note"].dropna()
    assert frame["note"].isna().sum() > 20  # empty notes
    assert notes.str.match(r"[A-Z]{3,} [A-Z]{2,}").mean() > 0.1  # shouting
    assert notes.str.contains(r"[^\x00-\x7f]").any()  # other languages
    assert notes.str.contains(r"\d+(?:\.\d)? (?:bar|mm/s|degC)").any()  # readings with units
    assert frame["fault"].value_counts(normalize=True)["ok"] > 0.4
    pd.testing.assert_frame_equal(maintenance_notes(rows=50, seed=1), maintenance_notes(rows=50, seed=1))


def test_data_example_writes_the_csv_where_the_spec_reads_it(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "example", "titanic"]) == 0
    assert "wrote 891 rows of titanic to landing/titanic/titanic.csv" in capsys.readouterr().out
    written = pd.read_csv(clean_env / "store" / "landing" / "titanic" / "titanic.csv")
    assert len(written) == 891
    assert main(["data", "example", "titanc"]) == 2
    assert "unknown data set 'titanc'; known: titanic" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "example", ["titanic-survival", "housing-value", "maintenance-notes", "pump-clusters"]
)
def test_an_example_runs_to_a_signed_bundle_and_an_agent_answers_it(
    example: str,
    ray_local: None,
    clean_env: Path,
    mosquitto: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`edgeml pipeline run` on the example as shipped, with two trials and a modest configuration per
    family (where the example sets no range) to keep CI short: the run, not the search, is tested."""
    if example == "pump-clusters":
        args = [
            "simulate",
            "sensors",
            "--machines",
            "3",
            "--readings",
            "300",
            "--store-key",
            "landing/pumps/h.csv",
        ]
        assert main(args) == 0
        fresh = pd.read_csv(clean_env / "store" / "landing" / "pumps" / "h.csv").sample(12, random_state=1)
    else:
        assert main(["data", "example", READS[example]]) == 0
        fresh = DATASETS[READS[example]]().sample(12, random_state=1)
    data = yaml.safe_load(EXAMPLES[example].read_text())
    data["search"]["trials"] = 2
    search = data["search"]
    search["space"] = {f: CHEAP[f] for f in search["families"] if f in CHEAP} | search.get("space", {})
    spec_path = tmp_path / f"{example}.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    code = main(["pipeline", "run", str(spec_path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    first, *others = data["profiles"]
    assert f"signed bundle bundles/{example}/1/{first}/manifest.json" in out.out
    for profile in others:  # an int8 profile may refuse a model its accuracy gate rejects, saying why
        signed = f"signed bundle bundles/{example}/1/{profile}/manifest.json" in out.out
        assert signed or f"export for {profile} refused" in out.out
    answers_as_the_model(
        clean_env, tmp_path, mosquitto, spec_path, data["profiles"][0], fresh.reset_index(drop=True)
    )
