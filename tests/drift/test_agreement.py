"""Agreement with NannyML's univariate drift as a property: >= 95% of (feature, chunk) alert cells.

``edgeml drift run`` (the CLI, on files) and NannyML's ``UnivariateDriftCalculator`` run on the
same reference and analysis periods of NannyML's own data sets, in chunks of the same size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from drift.conftest import DATASETS, dataset, nml
from edgeml.cli import main
from edgeml.drift.run import drift_run

NANNYML = {"js": "jensen_shannon", "hellinger": "hellinger", "chi2": "chi2"}


def _nannyml_alerts(name: str, continuous: str, categorical: str) -> pd.DataFrame:
    reference, analysis = dataset(name)
    _, columns, size = DATASETS[name]
    calc = nml.UnivariateDriftCalculator(
        column_names=columns,
        chunk_size=size,
        continuous_methods=[NANNYML[continuous]],
        categorical_methods=[NANNYML[categorical]],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calc.fit(reference).calculate(analysis).filter(period="analysis").to_df()


def _agreement(name: str, verdicts: list[dict[str, object]], continuous: str, categorical: str) -> float:
    theirs = _nannyml_alerts(name, continuous, categorical)
    cells = [
        bool(theirs[(str(v["feature"]), NANNYML[str(v["method"])], "alert")].iloc[int(str(v["chunk"]))])
        == v["alert"]
        for v in verdicts
    ]
    assert len(cells) == len(theirs) * len(DATASETS[name][1])
    return sum(cells) / len(cells)


@pytest.mark.slow
def test_drift_run_on_files_agrees_with_nannyml_on_the_california_housing_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, analysis = dataset("california")
    _, columns, size = DATASETS["california"]
    reference.to_parquet(tmp_path / "reference.parquet")
    analysis.to_csv(tmp_path / "analysis.csv", index=False)
    out = tmp_path / "drift.json"
    code = main(
        [
            "drift", "run", "--reference", str(tmp_path / "reference.parquet"),
            "--analysis", str(tmp_path / "analysis.csv"), "--chunk-size", str(size),
            "--columns", ",".join(columns), "--json", str(out),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "alerts in 72 (feature, chunk) cells" in printed
    run = json.loads(out.read_text())
    verdicts = [v | {"chunk": c["index"]} for c in run["chunks"] for v in c["features"]]
    assert _agreement("california", verdicts, "js", "js") >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("name", ["binary", "multiclass", "car_loan"])
@pytest.mark.parametrize(("continuous", "categorical"), [("js", "js"), ("hellinger", "chi2")])
def test_drift_run_agrees_with_nannyml_on_its_synthetic_sets(
    name: str, continuous: str, categorical: str
) -> None:
    reference, analysis = dataset(name)
    _, columns, size = DATASETS[name]
    run = drift_run(
        reference,
        analysis,
        size,
        columns=columns,
        continuous_method=continuous,  # type: ignore[arg-type]
        categorical_method=categorical,  # type: ignore[arg-type]
    )
    verdicts = [v.model_dump() | {"chunk": c.index} for c in run.chunks for v in c.features]
    assert sum(v["alert"] for v in verdicts) > 0  # the sets drift: agreeing on "nothing" proves little
    assert _agreement(name, verdicts, continuous, categorical) >= 0.95
