"""``edgeml drift run`` as a user meets it: the table, the JSON, and every mistake's message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgeml.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["drift", "run", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A reference and an analysis whose second half has a shifted x and a new mix of c."""
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], size=2000), "n": 1})
    analysis = pd.DataFrame(
        {
            "x": np.concatenate([rng.normal(size=400), rng.normal(2, 1, size=400)]),
            "c": np.concatenate(
                [rng.choice(["a", "b"], size=400), rng.choice(["a", "b"], 400, p=[0.9, 0.1])]
            ),
            "n": 1,
        }
    )
    reference.to_csv(tmp_path / "ref.csv", index=False)
    analysis.to_parquet(tmp_path / "analysis.parquet")
    return tmp_path / "ref.csv", tmp_path / "analysis.parquet"


def test_prints_every_chunk_and_feature_and_writes_json(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref, analysis = files
    out = tmp_path / "out.json"
    code, printed, err = run(
        capsys, "--reference", str(ref), "--analysis", str(analysis), "--chunk-size", "200",
        "--columns", "x", "--columns", "c", "--categorical-method", "chi2", "--json", str(out),
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "[0:199]" in printed
    assert "[600:799]" in printed
    assert "chi2" in printed
    assert "ALERT" in printed
    result = json.loads(out.read_text())
    alerts = {(c["index"], v["feature"]): v["alert"] for c in result["chunks"] for v in c["features"]}
    assert [alerts[i, "x"] for i in range(4)] == [False, False, True, True]
    assert [alerts[i, "c"] for i in range(4)] == [False, False, True, True]
    assert result["thresholds"]["chunk_size"] == 200
    assert result["thresholds"]["features"]["x"]["chunks"] == 10
    assert set(result["kinds"].items()) == {("x", "continuous"), ("c", "categorical")}


def test_a_numeric_column_can_be_judged_as_categories(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref, analysis = files
    out = tmp_path / "out.json"
    code, _, _ = run(
        capsys, "--reference", str(ref), "--analysis", str(analysis), "--chunk-size", "200",
        "--columns", "n", "--categorical", "n", "--json", str(out),
    )  # fmt: skip
    assert code == 0
    assert json.loads(out.read_text())["kinds"] == {"n": "categorical"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chunk-size", "0"], "--chunk-size must be at least 1"),
        (["--chunk-size", "10", "--columns", "nope"], "column 'nope' is not in the reference data"),
        (
            ["--chunk-size", "10", "--continuous-method", "ks"],
            "--continuous-method must be one of js, hellinger",
        ),
        (
            ["--chunk-size", "10", "--categorical-method", "wasserstein"],
            "--categorical-method must be one of",
        ),
        (["--chunk-size", "10", "--categorical", "zzz"], "--categorical 'zzz' is not one of the columns"),
    ],
)
def test_mistakes_exit_2_with_a_message_naming_the_option(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    ref, analysis = files
    code, out, err = run(capsys, "--reference", str(ref), "--analysis", str(analysis), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


def test_missing_and_unreadable_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    code, _, err = run(
        capsys, "--reference", str(tmp_path / "no.csv"), "--analysis", str(garbage), "--chunk-size", "5"
    )
    assert code == 2
    assert "reference file" in err
    assert "does not exist" in err
    code, _, err = run(capsys, "--reference", str(garbage), "--analysis", str(garbage), "--chunk-size", "5")
    assert code == 2
    assert "is not a readable CSV or Parquet table" in err


def test_a_column_of_dates_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.DataFrame({"t": pd.to_datetime(["2024-01-01", "2024-01-02"])})
    frame.to_parquet(tmp_path / "t.parquet")
    code, _, err = run(
        capsys,
        "--reference",
        str(tmp_path / "t.parquet"),
        "--analysis",
        str(tmp_path / "t.parquet"),
        "--chunk-size",
        "1",
    )
    assert code == 2
    assert "column 't'" in err
    assert "neither a number nor a category" in err
