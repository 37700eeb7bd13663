"""The user-facing error contract of parse_spec / load_spec.

Every problem is reported at once, each with its YAML path and 1-based line, in words a
user can act on. Bad specs are built from an example: load it, change it, dump it.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeml
from edgeml.errors import SpecError, SpecIssue, UserError
from edgeml.spec import Spec, load_spec, parse_spec

EXAMPLES = Path(edgeml.__file__).parent / "examples"
_CACHE: dict[str, dict[str, Any]] = {}

Mutation = Callable[[dict[str, Any]], object]


def example(name: str) -> dict[str, Any]:
    """A fresh, mutable copy of an example spec as plain data."""
    if name not in _CACHE:
        _CACHE[name] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
    return copy.deepcopy(_CACHE[name])


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="bad.yaml")
    assert info.value.issues, "a SpecError must carry at least one issue"
    return info.value


def issues_after(name: str, *mutations: Mutation) -> list[SpecIssue]:
    data = example(name)
    for mutate in mutations:
        mutate(data)
    return list(error(dump(data)).issues)


def only(issues: list[SpecIssue]) -> SpecIssue:
    assert len(issues) == 1, "expected exactly one issue, got:\n" + "\n".join(map(str, issues))
    return issues[0]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line number of the ``nth`` line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} occurs on {len(hits)} line(s)"
    return hits[nth - 1]


# ------------------------------------------------------------------ many errors at once


def test_several_errors_are_all_listed_with_path_and_line() -> None:
    data = example("pump-faults")
    data["search"]["trials"] = 0
    data["sources"][0]["qoss"] = 1
    data["gates"]["treshold"] = {"f1_macro": {"min": 0.5}}
    data["schema"]["columns"]["rpm"]["min"] = "low"
    text = dump(data)

    err = error(text)

    found = {(i.path, i.message, i.line) for i in err.issues}
    assert found == {
        ("search.trials", "must be ≥ 1, got 0", line_of(text, "trials: 0")),
        ("sources[0].qoss", "unknown key (did you mean 'qos'?)", line_of(text, "qoss:")),
        ("gates.treshold", "unknown key (did you mean 'thresholds'?)", line_of(text, "treshold:")),
        ("schema.columns.rpm.min", "must be a number, got 'low'", line_of(text, "min: low")),
    }
    lines = [i.line for i in err.issues]
    assert lines == sorted(lines), "issues are listed in file order"


def test_the_error_text_names_the_file_counts_problems_and_shows_lines() -> None:
    text = dump(example("pump-faults") | {"profiles": "x86"})
    text = text.replace("trials: 16", "trials: 0")
    err = error(text)
    message = str(err)
    assert message.startswith("bad.yaml: 2 problems\n")
    assert f"  - line {line_of(text, 'trials: 0')}: search.trials: must be ≥ 1, got 0" in message
    assert f"  - line {line_of(text, 'profiles:')}: profiles: must be a list" in message
    assert err.source == "bad.yaml"
    assert err.exit_code == 2
    assert isinstance(err, UserError)


def test_lines_are_right_in_the_hand_written_file_with_comments_and_flow_style() -> None:
    original = (EXAMPLES / "pump-faults.yaml").read_text()
    text = (
        original.replace("trials: 16", "trials: 0")
        .replace("{kind: between, column: temperature, min: -20, max: 150}", "{kind: between, column: temp}")
        .replace("{name: vibration_mean_30, column: vibration, agg: mean, size: 30}", "{name: v, agg: mean}")
    )
    err = error(text)
    found = {(i.path, i.line) for i in err.issues}
    assert ("search.trials", line_of(text, "trials: 0")) in found
    assert ("expectations[4]", line_of(text, "column: temp}")) in found  # between needs min or max
    assert ("features.window[0].column", line_of(text, "{name: v, agg: mean}")) in found  # required
    assert all(i.line is not None for i in err.issues)


# ------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("mutate", "path", "suggestion"),
    [
        (lambda d: d["sources"][0].__setitem__("qoss", 1), "sources[0].qoss", "qos"),
        (lambda d: d["gates"].__setitem__("treshold", {}), "gates.treshold", "thresholds"),
        (lambda d: d.__setitem__("profile", ["x86-64-generic"]), "profile", "profiles"),
        (lambda d: d["search"].__setitem__("trails", 3), "search.trails", "trials"),
        (
            lambda d: d["schema"]["columns"]["rpm"].__setitem__("units", "rpm"),
            "schema.columns.rpm.units",
            "unit",
        ),
        (
            lambda d: d["search"]["space"]["random_forest"]["max_depth"].__setitem__("integer", True),
            "search.space.random_forest.max_depth.integer",
            "int",  # the alias, not the Python name int_
        ),
        (lambda d: d.__setitem__("schemas", {}), "schemas", "schema"),  # alias, not schema_
    ],
)
def test_unknown_key_near_a_known_one_gets_a_suggestion(mutate: Mutation, path: str, suggestion: str) -> None:
    issue = only(issues_after("pump-faults", mutate))
    assert issue.path == path
    assert issue.message == f"unknown key (did you mean {suggestion!r}?)"


def test_unknown_key_far_from_any_lists_the_known_keys() -> None:
    issue = only(issues_after("pump-faults", lambda d: d["rollout"].__setitem__("zzz", 1)))
    assert issue.path == "rollout.zzz"
    assert issue.message == "unknown key; known: channel, canary_percent, groups, gate"


# --------------------------------------------------------------------- required sections

REQUIRED = ["name", "sources", "schema", "task", "search"]


@pytest.mark.parametrize("section", REQUIRED)
def test_a_missing_required_section_is_reported_as_required(section: str) -> None:
    issues = issues_after("pump-faults", lambda d: d.pop(section))
    assert (section, "required") in {(i.path, i.message) for i in issues}
    assert all(i.line == 1 for i in issues if i.message == "required")


def test_all_missing_sections_are_reported_together() -> None:
    issues = issues_after("pump-faults", *[lambda d, s=s: d.pop(s) for s in REQUIRED])
    assert {i.path for i in issues if i.message == "required"} == set(REQUIRED)


def test_a_missing_nested_field_points_at_its_parent_line() -> None:
    data = example("pump-faults")
    del data["sources"][1]["path"]
    text = dump(data)
    issue = only(list(error(text).issues))
    assert (issue.path, issue.message) == ("sources[1].path", "required")
    assert issue.line == line_of(text, "name: history")


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (
            lambda d: d["search"].__setitem__("trials", "many"),
            "search.trials",
            "must be a whole number, got 'many'",
        ),
        (lambda d: d["search"].__setitem__("seed", 1.5), "search.seed", "must be a whole number, got 1.5"),
        (lambda d: d.__setitem__("profiles", "x86"), "profiles", "must be a list"),
        (lambda d: d.__setitem__("schema", []), "schema", "must be a mapping"),
        (lambda d: d.__setitem__("name", 5), "name", "must be a string, got 5"),
        (
            lambda d: d["schema"]["columns"]["rpm"].__setitem__("nullable", "perhaps"),
            "schema.columns.rpm.nullable",
            "must be true or false, got 'perhaps'",
        ),
        (
            lambda d: d["rollout"].__setitem__("canary_percent", "lots"),
            "rollout.canary_percent",
            "must be a number, got 'lots'",
        ),
        (
            lambda d: d["sources"][0].__setitem__("qos", 5),
            "sources[0].qos",
            "must be one of 0, 1 or 2, got 5",
        ),
        (
            lambda d: d.__setitem__("name", "Pump Faults"),
            "name",
            "must be lower-case letters, digits, '-' and '_' (up to 63, not starting with '-' or '_'), "
            "got 'Pump Faults'",
        ),
        (
            lambda d: d["search"].__setitem__("time_budget", "5 parsecs"),
            "search.time_budget",
            "'5 parsecs' is not a duration; write e.g. '30s', '5m', '1h30m', '7d'",
        ),
        (
            lambda d: d["search"].__setitem__("max_concurrent", 0),
            "search.max_concurrent",
            "must be ≥ 1 or 'auto'",
        ),
        (lambda d: d["sources"].__setitem__(1, "history"), "sources[1]", "must be a mapping"),
    ],
)
def test_wrong_types_say_what_is_expected_and_what_was_found(
    mutate: Mutation, path: str, message: str
) -> None:
    issue = only(issues_after("pump-faults", mutate))
    assert (issue.path, issue.message) == (path, message)


def test_a_password_in_a_database_url_is_refused() -> None:
    issue = only(
        issues_after("pump-power", lambda d: d["sources"][1].__setitem__("url", "postgresql://u:secret@db/x"))
    )
    assert issue.path == "sources[1].url"
    assert "password_env" in issue.message


def test_a_non_string_top_level_key_is_reported() -> None:
    issue = only(issues_after("pump-faults", lambda d: d.__setitem__(1, "x")))
    assert issue.message == "keys must be strings"


# -------------------------------------------------------------------- not a spec at all


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: pump\ndescription: a: b\n", 2),
        ("name: pump\nsources: [\n  {kind: file\n", 4),
        ("name: pump\n\tschema: {}\n", 2),
        ("name: pump\n---\ntask: anomaly\n", 2),
        ("name: !!python/object:os.system x\n", 1),
    ],
    ids=["mapping-in-value", "unclosed-bracket", "tab", "two-documents", "python-tag"],
)
def test_malformed_yaml_is_one_issue_with_a_line(text: str, line: int) -> None:
    issue = only(list(error(text).issues))
    assert issue.path == ""
    assert issue.message.startswith("not valid YAML")
    assert issue.line == line
    assert f"line {line}" in issue.message


@pytest.mark.parametrize(
    ("text", "what"),
    [("", "empty"), ("# nothing but a comment\n\n", "empty"), ("- a\n- b\n", "a list"), ("hello\n", "a str")],
)
def test_a_document_that_is_not_a_mapping(text: str, what: str) -> None:
    issue = only(list(error(text).issues))
    assert issue.message == f"a spec is a YAML mapping; this file is {what}"
    assert issue.line == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: &a [*a]\n", "recursive alias"),
        ("schema: &s {columns: {x: *s}}\n", "recursive alias"),
        ("name: " + "[" * 2000 + "]" * 2000 + "\n", "nested more than 64 levels deep"),
        ("name: " + "[" * 80 + "]" * 80 + "\n", "nested more than 64 levels deep"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            ),
            "aliases expand to more than",
        ),
    ],
    ids=["recursive-list", "recursive-mapping", "very-deep", "deep", "alias-bomb"],
)
def test_documents_no_spec_needs_are_refused_quickly(text: str, message: str) -> None:
    issue = only(list(error(text).issues))
    assert issue.path == ""
    assert message in issue.message


def test_ordinary_aliases_still_work() -> None:
    text = (EXAMPLES / "pump-power.yaml").read_text()
    text = text.replace(
        "pressure: {type: float, unit: bar, min: 0, max: 16}", "pressure: &float {type: float}"
    )
    text = text.replace("rpm: {type: float, unit: 1/min, min: 0, max: 4000}", "rpm: *float")
    spec = parse_spec(text)
    assert spec.schema_.columns["pressure"] == spec.schema_.columns["rpm"]


# ------------------------------------------------------------------------ duplicate keys


def test_a_duplicate_top_level_key_is_reported_at_its_second_line() -> None:
    text = (EXAMPLES / "pump-power.yaml").read_text()
    text = text.replace("task: regression", "task: regression\ntask: regression")
    issue = only(list(error(text).issues))
    assert (issue.path, issue.message) == ("task", "key appears twice; the later one would win")
    assert issue.line == line_of(text, "task: regression", nth=2)


def test_a_duplicate_nested_key_is_reported_even_if_both_values_are_valid() -> None:
    rpm = "    rpm: {type: float, unit: 1/min, min: 0, max: 4000}"
    text = (EXAMPLES / "pump-power.yaml").read_text().replace(rpm, rpm + "\n    rpm: {type: float}")
    issue = only(list(error(text).issues))
    assert issue.path == "schema.columns.rpm"
    assert issue.line == line_of(text, "rpm: {type: float}")


def test_a_duplicate_key_in_a_flow_mapping() -> None:
    text = (EXAMPLES / "pump-power.yaml").read_text().replace("{max: 1.5}", "{max: 1.5, max: 2}")
    issue = only(list(error(text).issues))
    assert issue.path == "gates.thresholds.rmse.max"
    assert issue.line == line_of(text, "{max: 1.5, max: 2}")


# ------------------------------------------------------------------ discriminated unions


def test_unknown_source_kind_lists_the_kinds() -> None:
    issue = only(issues_after("pump-faults", lambda d: d["sources"][1].__setitem__("kind", "ftp")))
    assert issue.path == "sources[1]"
    assert issue.message == "kind must be one of 'file', 'sql', 'http', 'mqtt', got 'ftp'"


def test_missing_source_kind_lists_the_kinds() -> None:
    issue = only(issues_after("pump-faults", lambda d: d["sources"][1].pop("kind")))
    assert issue.path == "sources[1]"
    assert issue.message == "needs a kind: one of file, sql, http, mqtt"


def test_unknown_expectation_kind_lists_the_kinds() -> None:
    issue = only(issues_after("pump-faults", lambda d: d["expectations"][2].__setitem__("kind", "nope")))
    assert issue.path == "expectations[2]"
    for kind in ("row_count", "not_null", "unique", "between", "in_set", "regex", "monotonic_timestamp"):
        assert repr(kind) in issue.message
    assert issue.message.endswith("got 'nope'")


def test_missing_expectation_kind_lists_the_kinds() -> None:
    issue = only(issues_after("pump-faults", lambda d: d["expectations"][2].pop("kind")))
    assert issue.path == "expectations[2]"
    assert issue.message.startswith("needs a kind: one of row_count, not_null, unique, between")


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["sources"][0].__setitem__("qos", 5), "sources[0].qos"),
        (lambda d: d["sources"][0]["batch"].__setitem__("max_rows", 0), "sources[0].batch.max_rows"),
        (lambda d: d["sources"][0].__setitem__("topics", ["plant/#/x"]), "sources[0].topics"),
        (lambda d: d["sources"][1].__setitem__("delimiter", ";;"), "sources[1].delimiter"),
        (lambda d: d["expectations"][3].__setitem__("pattern", "pump-(\\d"), "expectations[3].pattern"),
        (lambda d: d["expectations"][0].pop("min"), "expectations[0]"),
        (lambda d: d["expectations"][7].__setitem__("max", 2), "expectations[7].max"),
    ],
    ids=["mqtt-qos", "mqtt-batch", "mqtt-topic", "file-delimiter", "regex", "row-count", "missing-fraction"],
)
def test_paths_inside_a_union_member_have_no_tag_segment(mutate: Mutation, path: str) -> None:
    issue = only(issues_after("pump-faults", mutate))
    assert issue.path == path
    assert not re.search(r"\.(mqtt|file|sql|http|regex|row_count|max_missing_fraction)\b", issue.path)


def test_a_file_source_whose_format_cannot_be_inferred() -> None:
    issue = only(issues_after("pump-power", lambda d: d["sources"][0].__setitem__("path", "data/pumps.txt")))
    assert issue.path == "sources[0]"
    assert "set format: csv | parquet | jsonl" in issue.message


# ------------------------------------------------------------------ cross-section checks


def assert_only(name: str, *mutations: Mutation, path: str, message: str) -> None:
    """Exactly one issue, at ``path``, with ``message`` in its text (no follow-on noise)."""
    issue = only(issues_after(name, *mutations))
    assert issue.path == path
    assert message in issue.message, issue.message
    assert issue.line is not None


def add_column(name: str, **column: Any) -> Mutation:
    return lambda d: d["schema"]["columns"].__setitem__(name, column)


def add_row_feature(expr: str, name: str = "extra") -> Mutation:
    return lambda d: d.setdefault("features", {}).setdefault("row", []).append({"name": name, "expr": expr})


def add_expectation(**expectation: Any) -> Mutation:
    return lambda d: d.setdefault("expectations", []).append(expectation)


def setitem(*keys: str | int, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        node: Any = d
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


def delitem(*keys: str | int) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        node: Any = d
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


def test_unknown_target_column_with_suggestion() -> None:
    assert_only(
        "pump-faults",
        setitem("target", value="faultt"),
        path="target",
        message="unknown column 'faultt' (did you mean 'fault'?)",
    )


@pytest.mark.parametrize(
    ("name", "mutations", "message"),
    [
        ("pump-faults", [setitem("target", value="temperature")], "a classification target must be category"),
        (
            "pump-power",
            [add_column("grade", type="category"), setitem("target", value="grade")],
            "column 'grade' has type category; a regression target must be float or int",
        ),
        (
            "pump-anomaly",
            [setitem("target", value="temperature")],
            "an anomaly target must be bool or int or category or string",
        ),
    ],
    ids=["classification-float", "regression-category", "anomaly-float"],
)
def test_target_type_must_suit_the_task(name: str, mutations: list[Mutation], message: str) -> None:
    assert_only(name, *mutations, path="target", message=message)


@pytest.mark.parametrize("name", ["pump-faults", "pump-power"])
def test_a_supervised_task_needs_a_target(name: str) -> None:
    task = example(name)["task"]
    assert_only(name, delitem("target"), path="target", message=f"a {task} task needs a target column")


def test_an_anomaly_task_needs_labels_to_score_its_trials() -> None:
    data = example("pump-anomaly")
    del data["target"]
    with pytest.raises(SpecError) as err:
        parse_spec(dump(data))
    assert [i.path for i in err.value.issues] == ["target"]
    assert "label column" in err.value.issues[0].message


def test_a_clustering_task_may_go_without_a_target() -> None:
    data = example("pump-anomaly")
    del data["target"]
    data["task"] = "clustering"
    data["search"] = {"families": ["kmeans"], "trials": 2}
    assert parse_spec(dump(data)).target is None


def test_a_pii_column_cannot_be_the_target() -> None:
    assert_only(
        "pump-faults", setitem("target", value="operator"), path="target", message="'operator' is marked pii"
    )


def test_the_entity_cannot_be_the_target() -> None:
    issues = issues_after("pump-faults", setitem("target", value="machine_id"))
    assert ("target", "column 'machine_id' is the schema's timestamp or entity") in {
        (i.path, i.message) for i in issues
    }


@pytest.mark.parametrize(
    ("expectation", "path", "message"),
    [
        ({"kind": "not_null", "column": "presure"}, "expectations[8].column", "(did you mean 'pressure'?)"),
        ({"kind": "unique", "columns": ["msg_idd"]}, "expectations[8].columns", "(did you mean 'msg_id'?)"),
        (
            {"kind": "in_set", "column": "flt", "values": ["ok"]},
            "expectations[8].column",
            "unknown column 'flt'",
        ),
        (
            {"kind": "between", "column": "machine_id", "min": 0},
            "expectations[8].column",
            "between needs a numeric column; 'machine_id' is string",
        ),
        (
            {"kind": "monotonic_timestamp", "column": "rpm"},
            "expectations[8].column",
            "column 'rpm' has type float, not timestamp",
        ),
        (
            {"kind": "freshness", "column": "tss", "max_age": "1h"},
            "expectations[8].column",
            "unknown column 'tss'",
        ),
    ],
    ids=["not-null", "unique", "in-set", "between-non-numeric", "monotonic-non-timestamp", "freshness"],
)
def test_expectations_are_checked_against_the_schema(
    expectation: dict[str, Any], path: str, message: str
) -> None:
    assert_only("pump-faults", add_expectation(**expectation), path=path, message=message)


@pytest.mark.parametrize("kind", ["monotonic_timestamp", "freshness"])
def test_a_timestamp_expectation_without_any_timestamp(kind: str) -> None:
    extra = {"max_age": "1h"} if kind == "freshness" else {}
    assert_only(
        "pump-anomaly",
        delitem("schema", "timestamp"),
        add_expectation(kind=kind, **extra),
        path="expectations[2].column",
        message="needs a timestamp column: set column here or schema.timestamp",
    )


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("rmp * 2", "unknown column or feature 'rmp' (did you mean 'rpm'?)"),
        ("machine_id * 2", "column 'machine_id' is string; expressions take numeric columns"),
        ("hour(rpm)", "'rpm' is not a timestamp column"),
        ("hour(specific_power)", "'specific_power' is not a timestamp column"),
        ("rpm.real", "'rpm.real' is not allowed"),
        ("rpm +", "cannot parse 'rpm +'"),
    ],
)
def test_row_feature_expressions_are_checked_against_the_schema(expr: str, message: str) -> None:
    assert_only("pump-faults", add_row_feature(expr), path="features.row[2].expr", message=message)


def test_a_row_feature_may_use_earlier_features_but_not_later_ones() -> None:
    data = example("pump-faults")
    data["features"]["row"].append({"name": "doubled", "expr": "specific_power * 2"})
    parse_spec(dump(data))
    assert_only(
        "pump-faults",
        lambda d: d["features"]["row"].insert(0, {"name": "doubled", "expr": "specific_power * 2"}),
        path="features.row[0].expr",
        message="'specific_power' is a later row feature",
    )


def test_a_feature_name_cannot_repeat_a_column() -> None:
    assert_only(
        "pump-faults", add_row_feature("rpm * 2", name="rpm"), path="features.row[2].name", message="'rpm'"
    )


PII_BADGE = add_column("badge", type="float", pii=True)


@pytest.mark.parametrize("compliance", ["gdpr", "hipaa"])
def test_a_pii_column_in_a_feature_is_barred_under_strict_compliance(compliance: str) -> None:
    assert_only(
        "pump-faults",
        PII_BADGE,
        add_row_feature("badge * 2"),
        setitem("compliance", value=compliance),
        path="features.row[2].expr",
        message=f"column 'badge' is pii; compliance {compliance} bars it from model inputs",
    )
    assert_only(
        "pump-faults",
        PII_BADGE,
        lambda d: d["features"]["window"].append({"name": "b", "column": "badge", "agg": "mean", "size": 3}),
        setitem("compliance", value=compliance),
        path="features.window[4].column",
        message="column 'badge' is pii",
    )


@pytest.mark.parametrize("compliance", ["none", "sox"])
def test_a_pii_column_in_a_feature_is_allowed_otherwise(compliance: str) -> None:
    data = example("pump-faults")
    for mutate in (PII_BADGE, add_row_feature("badge * 2"), setitem("compliance", value=compliance)):
        mutate(data)
    spec = parse_spec(dump(data))
    assert "badge" not in spec.input_columns()  # pii never goes in raw, whatever the compliance


def test_a_time_span_window_needs_schema_timestamp() -> None:
    assert_only(
        "pump-power",
        delitem("schema", "timestamp"),
        delitem("expectations", 3),  # freshness, which needs the timestamp too
        path="features.window[0].span",
        message="a time-span window needs schema.timestamp",
    )


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("vibraton", "unknown column 'vibraton' (did you mean 'vibration'?)"),
        ("machine_id", "window features need a numeric column; 'machine_id' is string"),
    ],
)
def test_a_window_feature_needs_a_numeric_column(column: str, message: str) -> None:
    assert_only(
        "pump-anomaly",
        setitem("features", "window", 0, "column", value=column),
        path="features.window[0].column",
        message=message,
    )


def test_excluding_an_unknown_column() -> None:
    assert_only(
        "pump-faults",
        lambda d: d["features"]["exclude"].append("msgid"),
        path="features.exclude[2]",
        message="unknown column 'msgid' (did you mean 'msg_id'?)",
    )


@pytest.mark.parametrize(
    ("family", "message"),
    [
        ("linear", "'linear' is not a classification family; choose from logistic, random_forest"),
        ("random_forrest", "(did you mean 'random_forest'?)"),
        ("logistic", "'logistic' is listed twice"),
    ],
)
def test_search_families_must_suit_the_task(family: str, message: str) -> None:
    assert_only(
        "pump-faults",
        lambda d: d["search"]["families"].append(family),
        path="search.families[4]",
        message=message,
    )


def test_a_parameter_the_family_does_not_take() -> None:
    assert_only(
        "pump-faults",
        setitem("search", "space", "mlp", "hiden_units", value={"choices": [8, 16]}),
        path="search.space.mlp.hiden_units",
        message="mlp has no parameter 'hiden_units'; known: batch_size, dropout",
    )
    issue = only(
        issues_after(
            "pump-faults", setitem("search", "space", "mlp", "hiden_units", value={"low": 1, "high": 2})
        )
    )
    assert issue.message.endswith("(did you mean 'hidden_units'?)")


def test_a_search_space_for_a_family_not_searched() -> None:
    assert_only(
        "pump-faults",
        setitem("search", "space", "logistic", value={"C": {"low": 0.1, "high": 10, "log": True}}),
        lambda d: d["search"]["families"].remove("logistic"),
        path="search.space.logistic",
        message="'logistic' is not in search.families",
    )


@pytest.mark.parametrize(
    ("param_range", "message"),
    [
        ({"low": 1, "high": 0.1}, "impossible range: low (1) is greater than high (0.1)"),
        ({"low": 0, "high": 0.1, "log": True}, "a log-scale range needs low > 0, got 0"),
        ({"low": -1, "high": 0.1, "log": True}, "a log-scale range needs low > 0, got -1"),
        ({"low": 0.5, "high": 4, "int": True}, "an integer range needs whole-number low and high"),
        ({"low": 1, "high": 4.5, "int": True}, "an integer range needs whole-number low and high"),
        ({"low": 1}, "give low and high, or choices"),
        ({"low": 1, "high": 2, "choices": [1, 2]}, "give either choices or low/high, not both"),
        ({"choices": []}, "must hold at least 1 item(s)"),
    ],
)
def test_impossible_search_ranges(param_range: dict[str, Any], message: str) -> None:
    issue = only(
        issues_after("pump-faults", setitem("search", "space", "mlp", "learning_rate", value=param_range))
    )
    assert issue.path.startswith("search.space.mlp.learning_rate")
    assert message in issue.message


def test_a_metric_the_task_does_not_have() -> None:
    assert_only(
        "pump-faults",
        setitem("search", "metric", value="rmse"),
        path="search.metric",
        message="'rmse' is not a classification metric; choose from accuracy, balanced_accuracy, f1_macro",
    )


def test_a_gate_on_an_unknown_metric() -> None:
    assert_only(
        "pump-faults",
        setitem("gates", "thresholds", "f1_macroo", value={"min": 0.5}),
        path="gates.thresholds.f1_macroo",
        message="(did you mean 'f1_macro'?)",
    )


def test_duplicate_source_names() -> None:
    assert_only(
        "pump-faults",
        setitem("sources", 1, "name", value="plant-sensors"),
        path="sources[1].name",
        message="duplicate source name 'plant-sensors' (also sources[0])",
    )


def test_duplicate_profiles() -> None:
    assert_only(
        "pump-faults",
        lambda d: d["profiles"].append("arm64-rpi4"),
        path="profiles[2]",
        message="profile 'arm64-rpi4' is listed twice",
    )


def test_a_text_column_needs_the_text_classification_task() -> None:
    assert_only(
        "pump-faults",
        add_column("notes", type="text"),
        path="schema.columns.notes.type",
        message="text column 'notes' has no encoder in a classification task",
    )
    # the remedy the message offers works
    data = example("pump-faults")
    data["schema"]["columns"]["notes"] = {"type": "text"}
    data["features"]["exclude"].append("notes")
    assert "notes" not in parse_spec(dump(data)).input_columns()


def as_text_classification(d: dict[str, Any]) -> None:
    d["task"] = "text-classification"
    d["search"] = {"families": ["tfidf_linear"], "trials": 4}


def test_text_classification_needs_a_text_column() -> None:
    assert_only(
        "pump-faults",
        as_text_classification,
        path="schema.columns",
        message="a text-classification task needs a text column as input",
    )
    data = example("pump-faults")
    as_text_classification(data)
    data["schema"]["columns"]["notes"] = {"type": "text"}
    assert parse_spec(dump(data)).task == "text-classification"


def test_a_spec_with_no_model_inputs_left() -> None:
    def strip(d: dict[str, Any]) -> None:
        d["features"] = {
            "exclude": [c for c in d["schema"]["columns"] if c not in ("ts", "machine_id", "is_anomaly")]
        }

    assert_only("pump-anomaly", strip, path="features", message="no model inputs remain")


# --------------------------------------------------------- lenient salvage of the rest


def test_a_broken_column_does_not_stop_the_other_sections_being_checked() -> None:
    issues = issues_after(
        "pump-faults",
        setitem("schema", "columns", "rpm", "type", value="floaty"),
        setitem("target", value="faultt"),
        lambda d: d["search"]["families"].append("linear"),
        add_expectation(kind="not_null", column="presure"),
        add_row_feature("machine_id * 2"),
    )
    assert {i.path for i in issues} == {
        "schema.columns.rpm.type",
        "target",
        "search.families[4]",
        "expectations[8].column",
        "features.row[2].expr",
    }


def test_a_broken_column_is_not_also_called_unknown_where_it_is_used() -> None:
    """rpm is used by a row feature; its own error is enough, no 'unknown column rpm' on top."""
    issue = only(issues_after("pump-faults", setitem("schema", "columns", "rpm", "type", value="floaty")))
    assert issue.path == "schema.columns.rpm.type"
    assert "got 'floaty'" in issue.message


def test_a_broken_timestamp_column_is_not_also_called_unknown() -> None:
    issue = only(issues_after("pump-faults", setitem("schema", "columns", "ts", value={"type": "time"})))
    assert issue.path == "schema.columns.ts.type"


def test_a_broken_schema_timestamp_does_not_make_timestamp_users_complain() -> None:
    issue = only(issues_after("pump-faults", setitem("schema", "timestamp", value="ts-x")))
    assert issue.path == "schema.timestamp"


def test_a_broken_target_is_not_also_reported_missing() -> None:
    issue = only(issues_after("pump-faults", setitem("target", value="fault-x")))
    assert issue.path == "target"
    assert issue.message.startswith("must be an identifier")


def test_a_column_that_breaks_only_its_own_rule_still_counts_as_a_column() -> None:
    issues = issues_after(
        "pump-faults",
        setitem("schema", "columns", "rpm", "min", value=5000),  # min > max: the column's own rule
        add_row_feature("rmp * 2"),
    )
    assert [(i.path, i.message) for i in issues] == [
        ("schema.columns.rpm", "min (5000.0) is greater than max (4000.0)"),
        ("features.row[2].expr", "unknown column or feature 'rmp' (did you mean 'rpm'?)"),
    ]


# ----------------------------------------------------------------------------- load_spec


def test_load_spec_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert not isinstance(info.value, SpecError)
    assert info.value.exit_code == 2
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_load_spec_on_a_folder_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read spec file"):
        load_spec(tmp_path)
    binary = tmp_path / "spec.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="cannot read spec file"):
        load_spec(binary)


def test_load_spec_names_the_file_in_its_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: ")


# ----------------------------------------------------------------------------- fuzzing


def parse_or_spec_error(text: str) -> None:
    try:
        result: Spec | SpecError = parse_spec(text)
    except SpecError as exc:
        result = exc
    if isinstance(result, SpecError):
        assert result.issues
        assert all(
            isinstance(i.path, str) and isinstance(i.message, str) and i.message for i in result.issues
        )
        assert all(i.line is None or i.line >= 1 for i in result.issues)
    else:
        assert isinstance(result, Spec)


KEYS = st.sampled_from(
    [
        "name",
        "kind",
        "sources",
        "schema",
        "columns",
        "timestamp",
        "entity",
        "type",
        "task",
        "target",
        "search",
        "families",
        "space",
        "low",
        "high",
        "int",
        "log",
        "choices",
        "features",
        "row",
        "window",
        "expr",
        "column",
        "expectations",
        "gates",
        "thresholds",
        "profiles",
        "compliance",
        "min",
        "max",
        "span",
        "agg",
        "size",
    ]
) | st.text(alphabet=string.ascii_letters + "_-.[] ", max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.sampled_from(
        ["file", "mqtt", "float", "timestamp", "ts", "rpm", "anomaly", "5m", "between", "hour(ts)"]
    )
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=30,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text())
def test_arbitrary_text_gives_a_spec_or_a_spec_error(text: str) -> None:
    parse_or_spec_error(text)


@FUZZ
@given(
    st.lists(
        st.sampled_from(
            [
                "name:",
                " ",
                "\n",
                "  ",
                "- ",
                "[",
                "]",
                "{",
                "}",
                ",",
                ":",
                "&a ",
                "*a",
                "'",
                '"',
                "#",
                "!!",
                "sources",
                "x",
                "1",
                "---",
                "? ",
                "|",
                ">",
                "\t",
            ]
        )
    ).map("".join)
)
def test_yaml_ish_text_gives_a_spec_or_a_spec_error(text: str) -> None:
    parse_or_spec_error(text)


@FUZZ
@given(st.dictionaries(KEYS, TREES, max_size=8))
def test_arbitrary_nested_data_gives_a_spec_or_a_spec_error(data: dict[str, Any]) -> None:
    parse_or_spec_error(yaml.safe_dump(data))


@FUZZ
@given(st.sampled_from(["pump-faults", "pump-power", "pump-anomaly"]), st.data())
def test_an_example_with_any_part_replaced_gives_a_spec_or_a_spec_error(
    name: str, data: st.DataObject
) -> None:
    spec = example(name)
    node: Any = spec
    for _ in range(data.draw(st.integers(1, 5))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        if isinstance(node[key], dict | list) and data.draw(st.booleans()):
            node = node[key]
            continue
        node[key] = data.draw(TREES)
        break
    parse_or_spec_error(yaml.safe_dump(spec))


def test_mqtt_message_id_must_be_a_schema_column() -> None:
    from edgeml.demo import example_specs

    path = next(p for p in example_specs() if p.name == "pump-faults.yaml")
    data = yaml.safe_load(path.read_text())
    data["sources"][0]["message_id"] = "uuid"
    with pytest.raises(SpecError) as err:
        parse_spec(yaml.safe_dump(data))
    assert [i.path for i in err.value.issues] == ["sources[0].message_id"]
    assert "not a schema column" in err.value.issues[0].message
