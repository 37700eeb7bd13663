"""The shipped example specs: they load, resolve paths, fingerprint stably and match the JSON Schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

import edgeml
from edgeml.errors import SpecError
from edgeml.spec import Spec, load_spec, parse_spec

PACKAGE_EXAMPLES = Path(edgeml.__file__).parent / "examples"
REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted(PACKAGE_EXAMPLES.glob("*.yaml"))
ids = [p.stem for p in EXAMPLES]


def raw(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = Spec.model_json_schema(by_alias=True)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_there_are_examples_and_the_repo_folder_shows_the_same_files() -> None:
    assert len(EXAMPLES) >= 3
    assert sorted(p.name for p in REPO_EXAMPLES.glob("*.yaml")) == [p.name for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_example_loads(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, Spec)
    assert spec.name == raw(path)["name"]
    assert spec.base_dir == path.resolve().parent
    # the search metric is one the task knows, with a direction
    assert spec.metric_mode in ("max", "min")


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_example_loads_from_a_relative_path_too(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path.parent)
    spec = load_spec(path.name)
    assert spec.base_dir == path.resolve().parent
    assert spec.base_dir.is_absolute()


# --------------------------------------------------------------------------- resolve_path


def test_relative_paths_resolve_against_the_spec_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = raw(PACKAGE_EXAMPLES / "pump-power.yaml")
    data["sources"][0]["path"] = "data/pumps/*.csv"
    folder = tmp_path / "specs" / "nested"
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter

    spec = load_spec(Path("..") / "specs" / "nested" / "spec.yaml")

    source = spec.sources[0]
    assert source.kind == "file"
    assert spec.resolve_path(source.path) == str(folder.resolve() / "data" / "pumps" / "*.csv")


@pytest.mark.parametrize(
    "path",
    ["store://landing/pumps/*.csv", "s3://bucket/prefix/*.parquet", "duckdb:///var/lib/x.duckdb"],
)
def test_urls_are_left_alone(path: str) -> None:
    spec = load_spec(PACKAGE_EXAMPLES / "pump-power.yaml")
    assert spec.resolve_path(path) == path


def test_absolute_paths_are_left_alone(tmp_path: Path) -> None:
    spec = load_spec(PACKAGE_EXAMPLES / "pump-power.yaml")
    absolute = str(tmp_path / "data.csv")
    assert spec.resolve_path(absolute) == absolute


def test_a_spec_parsed_from_text_has_no_base_dir_and_keeps_paths_as_written() -> None:
    spec = parse_spec((PACKAGE_EXAMPLES / "pump-power.yaml").read_text())
    assert spec.base_dir is None
    assert spec.resolve_path("data/x.csv") == "data/x.csv"
    located = spec.located_at(Path("/srv/specs"))
    assert located.resolve_path("data/x.csv") == str(Path("/srv/specs") / "data" / "x.csv")
    assert spec.base_dir is None  # located_at returns a copy


# ---------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_fingerprint_is_stable_across_loads_and_formatting(path: Path) -> None:
    first = load_spec(path).fingerprint()
    assert len(first) == 64
    assert int(first, 16) >= 0  # hex
    assert load_spec(path).fingerprint() == first
    # same content without comments, in another key order and flow style: same fingerprint
    data = raw(path)
    reordered = dict(reversed(list(data.items())))
    assert parse_spec(yaml.safe_dump(reordered, default_flow_style=True)).fingerprint() == first
    # where the file lives is not part of what a model was trained from
    assert parse_spec(path.read_text()).fingerprint() == first


def test_fingerprint_ignores_spelling_out_a_default() -> None:
    path = PACKAGE_EXAMPLES / "pump-anomaly.yaml"
    data = raw(path)
    assert "scheduler" not in data["search"]
    data["search"]["scheduler"] = "asha"  # the default
    assert parse_spec(yaml.safe_dump(data)).fingerprint() == load_spec(path).fingerprint()


def test_fingerprint_survives_a_release_that_adds_a_defaulted_field() -> None:
    class LaterSpec(Spec):
        knob_from_a_later_release: int = 3

    text = (PACKAGE_EXAMPLES / "pump-anomaly.yaml").read_text()
    data = yaml.safe_load(text)
    assert LaterSpec.model_validate(data).fingerprint() == parse_spec(text).fingerprint()
    data["knob_from_a_later_release"] = 4
    assert LaterSpec.model_validate(data).fingerprint() != parse_spec(text).fingerprint()


MUTATIONS = {
    "description": lambda d: d.__setitem__("description", d["description"] + "!"),
    "trials": lambda d: d["search"].__setitem__("trials", d["search"]["trials"] + 1),
    "seed": lambda d: d["search"].__setitem__("seed", 12345),
    "column-unit": lambda d: next(iter(d["schema"]["columns"].values())).__setitem__("unit", "furlong"),
    "profiles": lambda d: d.__setitem__("profiles", ["x86-64-generic"]),
    "canary": lambda d: d.setdefault("rollout", {}).__setitem__("canary_percent", 42),
    "time-budget": lambda d: d["search"].__setitem__("time_budget", "90m"),
    "extra-source": lambda d: d.__setitem__("sources", [*d["sources"], {**d["sources"][0], "name": "zz"}]),
}


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_fingerprint_changes_when_a_field_changes(path: Path, mutation: str) -> None:
    data = raw(path)
    changed = copy.deepcopy(data)
    MUTATIONS[mutation](changed)
    assert changed != data
    assert parse_spec(yaml.safe_dump(changed)).fingerprint() != load_spec(path).fingerprint()


def test_fingerprint_tells_close_durations_apart() -> None:
    data = raw(PACKAGE_EXAMPLES / "pump-power.yaml")
    prints = set()
    for budget in ("1234567.5s", "1234567.6s", "1234567s", 0.000001, 0.000002):
        data["search"]["time_budget"] = budget
        prints.add(parse_spec(yaml.safe_dump(data)).fingerprint())
    assert len(prints) == 5


# ---------------------------------------------------------------------------- JSON Schema


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_json_schema_accepts_every_example(path: Path, validator: Draft202012Validator) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(raw(path))]
    assert errors == []


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_json_schema_accepts_the_canonical_dump(path: Path, validator: Draft202012Validator) -> None:
    """What the fingerprint hashes is itself a valid spec, and parses back to the same spec."""
    spec = load_spec(path)
    dumped = spec.model_dump(mode="json", by_alias=True)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(dumped)]
    assert errors == []
    assert Spec.model_validate(dumped).fingerprint() == spec.fingerprint()


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
@pytest.mark.parametrize(
    "where",
    [(), ("schema",), ("search",), ("sources", 0), ("schema", "columns", "ts")],
    ids=["top", "schema", "search", "source", "column"],
)
def test_json_schema_rejects_an_unknown_key(
    path: Path, where: tuple[str | int, ...], validator: Draft202012Validator
) -> None:
    data = raw(path)
    node: Any = data
    for part in where:  # "ts": the example's first column (not every example has a timestamp)
        node = node[next(iter(node)) if part == "ts" else part]
    node["colour"] = "red"
    errors = list(validator.iter_errors(data))
    assert errors, f"an unknown key at {where} passed the schema"
    assert any("colour" in e.message or any("colour" in c.message for c in e.context) for e in errors)


def test_json_schema_and_parser_agree_on_a_few_invalid_values(validator: Draft202012Validator) -> None:
    base = raw(PACKAGE_EXAMPLES / "pump-faults.yaml")
    for mutate in (
        lambda d: d["search"].__setitem__("trials", 0),
        lambda d: d.__setitem__("name", "Pump Faults"),
        lambda d: d["sources"][0].__setitem__("kind", "ftp"),
        lambda d: d["search"].__setitem__("time_budget", "5 parsecs"),
        lambda d: d.pop("task"),
    ):
        data = copy.deepcopy(base)
        mutate(data)
        assert not validator.is_valid(data)
        with pytest.raises(SpecError):
            parse_spec(yaml.safe_dump(data))
