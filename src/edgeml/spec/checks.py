"""Rules that relate the sections of a spec to each other.

Each check receives the sections that parsed (a section that failed its own
validation is ``None``) and yields every issue it finds, so one run of
``edgeml spec check`` lists all problems, each with its YAML path.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from edgeml.errors import SpecIssue
from edgeml.features.expr import ExpressionError, parse_expression
from edgeml.spec.models import FAMILIES, METRICS, Column, Schema, Task

__all__ = ["semantic_issues"]

NUMERIC = ("float", "int", "bool")
Parts = Mapping[str, Any]


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a classification", "an anomaly"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _unknown_column(schema: Schema, name: str) -> str:
    return f"unknown column {name!r}{_suggest(name, schema.columns)}"


def _broken(p: Parts, *loc: str) -> bool:
    """Whether ``loc`` is in the spec but invalid: its own issue is reported already, and a
    reference to it must not be called unknown (or missing) on top."""
    return tuple(loc) in p.get("broken", ())


def _check_schema(p: Parts) -> Iterator[SpecIssue]:
    schema: Schema | None = p["schema"]
    if schema is None:
        return
    if schema.timestamp is not None:
        col = schema.columns.get(schema.timestamp)
        if col is None:
            if not _broken(p, "schema", "columns", schema.timestamp):
                yield SpecIssue("schema.timestamp", _unknown_column(schema, schema.timestamp))
        elif col.type != "timestamp":
            yield SpecIssue(
                "schema.timestamp", f"column {schema.timestamp!r} has type {col.type}, not timestamp"
            )
    if (
        schema.entity is not None
        and schema.entity not in schema.columns
        and not _broken(p, "schema", "columns", schema.entity)
    ):
        yield SpecIssue("schema.entity", _unknown_column(schema, schema.entity))


def _check_sources(p: Parts) -> Iterator[SpecIssue]:
    seen: dict[str, int] = {}
    for i, source in enumerate(p["sources"] or []):
        if source.name in seen:
            yield SpecIssue(
                f"sources[{i}].name",
                f"duplicate source name {source.name!r} (also sources[{seen[source.name]}])",
            )
        seen.setdefault(source.name, i)
        schema = p["schema"]
        msg_id = getattr(source, "message_id", None) if source.kind == "mqtt" else None
        if msg_id and schema is not None and msg_id not in schema.columns:
            yield SpecIssue(
                f"sources[{i}].message_id",
                f"{msg_id!r} is not a schema column; the lander de-duplicates across restarts by the "
                "ids it finds in the lake, so add it to schema.columns (or set message_id: null)",
            )


_TARGET_TYPES: Mapping[Task, tuple[str, ...]] = {
    "classification": ("category", "string", "int", "bool"),
    "regression": ("float", "int"),
    "text-classification": ("category", "string", "int", "bool"),
    "clustering": ("category", "string", "int", "bool"),
    "anomaly": ("bool", "int", "category", "string"),
}


def _check_target(p: Parts) -> Iterator[SpecIssue]:
    task: Task | None = p["task"]
    schema: Schema | None = p["schema"]
    target: str | None = p["target"]
    if task is None:
        return
    if target is None:
        if task in ("classification", "regression", "text-classification") and not _broken(p, "target"):
            yield SpecIssue("target", f"{_a(task)} task needs a target column")
        elif task == "anomaly" and not _broken(p, "target"):
            # Every anomaly metric needs labels: without them no trial can be scored.
            yield SpecIssue(
                "target",
                "an anomaly task needs a label column as target to score trials and "
                "calibrate the threshold (the model itself is fitted without labels)",
            )
        return
    if schema is None:
        return
    col = schema.columns.get(target)
    if col is None:
        if not _broken(p, "schema", "columns", target):
            yield SpecIssue("target", _unknown_column(schema, target))
        return
    if col.type not in _TARGET_TYPES[task]:
        yield SpecIssue(
            "target",
            f"column {target!r} has type {col.type}; {_a(task)} target must be "
            f"{' or '.join(_TARGET_TYPES[task])}",
        )
    if col.pii:
        yield SpecIssue("target", f"column {target!r} is marked pii and cannot be a target")
    if target in (schema.timestamp, schema.entity):
        yield SpecIssue("target", f"column {target!r} is the schema's timestamp or entity")


def _timestamp_for(p: Parts, schema: Schema, column: str | None, path: str) -> Iterator[SpecIssue]:
    name = column or schema.timestamp
    if name is None:
        if not _broken(p, "schema", "timestamp"):
            yield SpecIssue(path, "needs a timestamp column: set column here or schema.timestamp")
    elif name not in schema.columns:
        if not _broken(p, "schema", "columns", name):
            yield SpecIssue(path, _unknown_column(schema, name))
    elif schema.columns[name].type != "timestamp":
        yield SpecIssue(path, f"column {name!r} has type {schema.columns[name].type}, not timestamp")


def _check_expectations(p: Parts) -> Iterator[SpecIssue]:
    schema: Schema | None = p["schema"]
    if schema is None:
        return
    for i, exp in enumerate(p["expectations"] or []):
        path = f"expectations[{i}]"
        if exp.kind in ("monotonic_timestamp", "freshness"):
            yield from _timestamp_for(p, schema, exp.column, f"{path}.column")
            continue
        columns = exp.columns if exp.kind == "unique" else [getattr(exp, "column", None)]
        for name in columns:
            if name is None:
                continue
            col = schema.columns.get(name)
            if col is None:
                if not _broken(p, "schema", "columns", name):
                    yield SpecIssue(
                        f"{path}.column{'s' if exp.kind == 'unique' else ''}", _unknown_column(schema, name)
                    )
            elif exp.kind == "between" and col.type not in NUMERIC:
                yield SpecIssue(f"{path}.column", f"between needs a numeric column; {name!r} is {col.type}")


def _check_features(p: Parts) -> Iterator[SpecIssue]:
    schema: Schema | None = p["schema"]
    features = p["features"]
    if schema is None or features is None:
        return
    strict_pii = p["compliance"] in ("gdpr", "hipaa")
    known: dict[str, Column | None] = dict(schema.columns)  # None marks a derived feature
    for i, feat in enumerate(features.row):
        path = f"features.row[{i}]"
        later = {f.name for f in features.row[i + 1 :]}
        if feat.name in known:
            yield SpecIssue(f"{path}.name", f"{feat.name!r} is already a column or feature")
        try:
            expr = parse_expression(feat.expr)
        except ExpressionError as exc:
            yield SpecIssue(f"{path}.expr", str(exc))
            known[feat.name] = None
            continue
        for name in sorted(expr.columns):
            if name not in known and _broken(p, "schema", "columns", name):
                continue
            if name not in known and name in later:
                yield SpecIssue(
                    f"{path}.expr",
                    f"{name!r} is a later row feature; a row feature can use only columns and "
                    "earlier features",
                )
                continue
            if name not in known:
                yield SpecIssue(f"{path}.expr", f"unknown column or feature {name!r}{_suggest(name, known)}")
                continue
            col = known[name]
            if name in expr.time_columns:
                if col is None or col.type != "timestamp":
                    yield SpecIssue(f"{path}.expr", f"{name!r} is not a timestamp column")
            elif col is not None and col.type not in NUMERIC:
                yield SpecIssue(
                    f"{path}.expr",
                    f"column {name!r} is {col.type}; expressions take "
                    "numeric columns (and timestamps inside time functions)",
                )
            if strict_pii and col is not None and col.pii:
                yield SpecIssue(
                    f"{path}.expr",
                    f"column {name!r} is pii; compliance {p['compliance']} bars it from model inputs",
                )
        known[feat.name] = None
    for i, win in enumerate(features.window):
        path = f"features.window[{i}]"
        if win.name in known:
            yield SpecIssue(f"{path}.name", f"{win.name!r} is already a column or feature")
        known[win.name] = None
        col = schema.columns.get(win.column)
        if col is None:
            if not _broken(p, "schema", "columns", win.column):
                yield SpecIssue(f"{path}.column", _unknown_column(schema, win.column))
        elif col.type not in NUMERIC:
            yield SpecIssue(
                f"{path}.column", f"window features need a numeric column; {win.column!r} is {col.type}"
            )
        elif strict_pii and col.pii:
            yield SpecIssue(
                f"{path}.column",
                f"column {win.column!r} is pii; compliance {p['compliance']} bars it from model inputs",
            )
        if win.span is not None and schema.timestamp is None and not _broken(p, "schema", "timestamp"):
            yield SpecIssue(f"{path}.span", "a time-span window needs schema.timestamp")
    for i, name in enumerate(features.exclude):
        if name not in schema.columns and not _broken(p, "schema", "columns", name):
            yield SpecIssue(f"features.exclude[{i}]", _unknown_column(schema, name))


def _check_inputs(p: Parts) -> Iterator[SpecIssue]:
    spec = p["spec"]
    if spec is None:
        return
    columns = spec.input_columns()
    text = [c for c in columns if spec.schema_.columns[c].type == "text"]
    if spec.task == "text-classification":
        if not text:
            yield SpecIssue("schema.columns", "a text-classification task needs a text column as input")
    else:
        for name in text:
            yield SpecIssue(
                f"schema.columns.{name}.type",
                f"text column {name!r} has no encoder in "
                f"{_a(spec.task)} task; use task text-classification or add it to "
                "features.exclude",
            )
    if not columns and not spec.features.row and not spec.features.window:
        yield SpecIssue(
            "features",
            "no model inputs remain after excluding target, timestamp, entity, pii and features.exclude",
        )


def _check_search(p: Parts) -> Iterator[SpecIssue]:
    task: Task | None = p["task"]
    search = p["search"]
    if task is None or search is None:
        return
    families = FAMILIES[task]
    for i, fam in enumerate(search.families):
        if fam not in families:
            yield SpecIssue(
                f"search.families[{i}]",
                f"{fam!r} is not {_a(task)} family; choose from "
                f"{', '.join(families)}{_suggest(fam, families)}",
            )
        elif fam in search.families[:i]:
            yield SpecIssue(f"search.families[{i}]", f"{fam!r} is listed twice")
    for fam, params in search.space.items():
        if fam not in search.families:
            yield SpecIssue(f"search.space.{fam}", f"{fam!r} is not in search.families")
            continue
        for param in params:
            if param not in families.get(fam, ()):
                yield SpecIssue(
                    f"search.space.{fam}.{param}",
                    f"{fam} has no parameter {param!r}; "
                    f"known: {', '.join(sorted(families.get(fam, ())))}"
                    f"{_suggest(param, families.get(fam, ()))}",
                )
    if search.metric is not None and search.metric not in METRICS[task]:
        yield SpecIssue(
            "search.metric",
            f"{search.metric!r} is not {_a(task)} metric; choose from "
            f"{', '.join(METRICS[task])}{_suggest(search.metric, METRICS[task])}",
        )


def _check_gates(p: Parts) -> Iterator[SpecIssue]:
    task: Task | None = p["task"]
    gates = p["gates"]
    if task is None or gates is None:
        return
    for metric in gates.thresholds:
        if metric not in METRICS[task]:
            yield SpecIssue(
                f"gates.thresholds.{metric}",
                f"{metric!r} is not {_a(task)} metric; "
                f"choose from {', '.join(METRICS[task])}{_suggest(metric, METRICS[task])}",
            )


def _check_retrain(p: Parts) -> Iterator[SpecIssue]:
    task: Task | None = p["task"]
    retrain = p["retrain"]
    if task is None or retrain is None or retrain.triggers.accuracy_drop is None:
        return
    if task not in ("classification", "text-classification"):
        yield SpecIssue(
            "retrain.triggers.accuracy_drop",
            f"a {task} model has no accuracy to drop (it is measured for classifiers); "
            "retrain on drift, schedule or label_volume instead",
        )


def _check_profiles(p: Parts) -> Iterator[SpecIssue]:
    profiles = p["profiles"] or []
    for i, name in enumerate(profiles):
        if name in profiles[:i]:
            yield SpecIssue(f"profiles[{i}]", f"profile {name!r} is listed twice")


def _check_support(p: Parts) -> Iterator[SpecIssue]:
    """Families and input kinds each listed profile's runtime cannot run (see edgeml.support)."""
    from edgeml.profiles import load_profiles
    from edgeml.support import family_refusal, input_kind, input_refusal, task_alternatives

    spec = p["spec"]
    if spec is None:
        return
    shipped = load_profiles()  # an operator's own profiles are checked when the export loads them
    kinds = {input_kind(spec.schema_.columns[c].type) for c in spec.input_columns()}
    if any(
        spec.schema_.columns.get(n) is not None and spec.schema_.columns[n].type == "timestamp"
        for f in spec.features.row
        for n in parse_expression(f.expr).time_columns
    ):
        kinds.add("timestamp")
    for i, name in enumerate(spec.profiles):
        profile = shipped.get(name)
        if profile is None:
            continue
        runtime = profile.runtime
        for family in spec.search.families:
            why = family_refusal(runtime, family)
            if why is None:
                continue
            able = [n for n, pr in shipped.items() if family_refusal(pr.runtime, family) is None]
            others = [f for f in task_alternatives(spec.task, runtime) if f != family]
            instead = (
                f"; on {name}, {_a(spec.task)} task can use {', '.join(others)}"
                if others
                else f"; {name} runs no {spec.task} family"
            )
            yield SpecIssue(
                f"profiles[{i}]",
                f"{name} ({runtime}) cannot run {family}: {why}. Profiles that run {family}: "
                f"{', '.join(able)}{instead}",
            )
        for kind in sorted(kinds):
            why = input_refusal(runtime, kind)
            if why is not None:
                able = [n for n, pr in shipped.items() if input_refusal(pr.runtime, kind) is None]
                yield SpecIssue(
                    f"profiles[{i}]",
                    f"{name} ({runtime}) cannot take this spec's {kind} inputs: {why}. Profiles that "
                    f"take them: {', '.join(able)}",
                )


CHECKS: tuple[Callable[[Parts], Iterator[SpecIssue]], ...] = (
    _check_schema,
    _check_sources,
    _check_target,
    _check_expectations,
    _check_features,
    _check_inputs,
    _check_search,
    _check_gates,
    _check_retrain,
    _check_profiles,
    _check_support,
)


def semantic_issues(parts: Parts) -> list[SpecIssue]:
    """Every cross-section issue among the sections that parsed.

    ``parts`` maps section names (``schema``, ``sources``, ``task``, ...) to parsed values or
    ``None``; ``spec`` is the whole :class:`~edgeml.spec.models.Spec` when all of it parsed.
    """
    return [issue for check in CHECKS for issue in check(parts)]


# The mission's parameters (pipeline.type, deployment_target, data_volume) have rules of their own.
from edgeml.spec.mission import pipeline_issues  # noqa: E402

CHECKS += (pipeline_issues,)
