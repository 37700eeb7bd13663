"""Load a pipeline spec from YAML and report every problem with its YAML path and line."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from edgeml.errors import SpecError, SpecIssue, UserError
from edgeml.spec.checks import semantic_issues
from edgeml.spec.models import Spec

__all__ = ["load_spec", "parse_spec"]

Loc = tuple[str | int, ...]
_PATTERN_MEANING = {
    r"^[a-z0-9][a-z0-9_-]{0,62}$": "lower-case letters, digits, '-' and '_' (up to 63, not "
    "starting with '-' or '_')",
    r"^[A-Za-z_][A-Za-z0-9_]{0,127}$": "an identifier: letters, digits and '_', not starting with a digit",
    r"^[A-Z_][A-Z0-9_]*$": "an environment variable name in capitals, e.g. SENSOR_API_TOKEN",
}


def load_spec(path: Path | str) -> Spec:
    """Read, parse and check the spec at ``path``; relative data paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"spec file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read spec file {path}: {exc}") from exc
    return parse_spec(text, source=str(path), base_dir=path.resolve().parent)


def parse_spec(text: str, *, source: str = "<spec>", base_dir: Path | None = None) -> Spec:
    """Parse spec YAML; raise :class:`SpecError` listing every issue found."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        shape = _shape_issue(root)
        if shape is not None:  # checked before safe_load, which would build the cycle or blow-up
            raise SpecError(source, [shape])
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        where = f" (line {line}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError(source, [SpecIssue("", f"not valid YAML: {problem}{where}", line)]) from exc
    except RecursionError:  # PyYAML composes recursively: thousands of nested brackets
        raise SpecError(source, [SpecIssue("", f"nested more than {_MAX_DEPTH} levels deep", 1)]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(source, [SpecIssue("", f"a spec is a YAML mapping; this file is {kind}", 1)])

    assert root is not None  # a non-empty mapping was loaded from the same text
    lines: dict[Loc, int] = {}
    issues = list(_index(root, (), lines))
    spec: Spec | None = None
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issue(err, lines) for err in exc.errors())
    issues.extend(_with_line(i, lines) for i in semantic_issues(_sections(data, spec)))
    if issues or spec is None:
        raise SpecError(source, sorted(_dedupe(issues), key=lambda i: i.line or 0))
    return spec if base_dir is None else spec.located_at(base_dir)


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen: set[tuple[str, str]] = set()
    out = []
    for issue in issues:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            out.append(issue)
    return out


_MAX_DEPTH = 64  # the deepest real path is ~6 (search.space.<family>.<param>.choices[0])
_MAX_VALUES = 100_000  # values once aliases are expanded; a real spec holds a few hundred


def _shape_issue(root: yaml.Node | None) -> SpecIssue | None:
    """A recursive alias, absurd nesting or an alias blow-up (no spec needs any); None if fine.

    Everything after this point (line index, pydantic, the lenient salvage) walks the
    document recursively and expanded, so these must be refused first. Iterative, and each
    node is visited once even when aliases share it.
    """
    depth: dict[int, int] = {}
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)] if root is not None else []
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        line = node.start_mark.line + 1
        if finished:
            on_path.discard(key)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            size[key] = 1 + sum(size[id(c)] for c in children)
            if depth[key] > _MAX_DEPTH:
                return SpecIssue("", f"nested more than {_MAX_DEPTH} levels deep", line)
            if size[key] > _MAX_VALUES:
                return SpecIssue("", f"aliases expand to more than {_MAX_VALUES} values", line)
        elif key in on_path:
            return SpecIssue("", "a YAML alias refers to a node that contains it (recursive alias)", line)
        elif key not in depth:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children)
    return None


def _index(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Iterator[SpecIssue]:
    """Record the line of every path; report duplicate keys (PyYAML keeps the last silently)."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                yield SpecIssue(
                    _path((*loc, key)),
                    "key appears twice; the later one would win",
                    key_node.start_mark.line + 1,
                )
            seen.add(key)
            yield from _index(value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _index(item, (*loc, i), lines)


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).isidentifier():
            out += f".{part}" if out else str(part)
        else:
            out += f"[{part!r}]"
    return out


def _line(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _with_line(issue: SpecIssue, lines: Mapping[Loc, int]) -> SpecIssue:
    loc: list[str | int] = []
    for token in issue.path.replace("]", "").replace("[", ".").split("."):
        if token:
            loc.append(int(token) if token.isdigit() else token)
    return SpecIssue(issue.path, issue.message, _line(tuple(loc), lines))


# -- pydantic errors -> issues ------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(members[0]) if len(members) == 1 else tuple(_unwrap(m) for m in members)
    return tp


def _field(model: type[BaseModel], name: str) -> Any:
    for fname, field in model.model_fields.items():
        if name in (fname, field.alias):
            return field.annotation
    return None


def _walk(loc: tuple[Any, ...]) -> tuple[Loc, Any]:
    """Drop discriminator tags from a pydantic location; return it and the type it ends at."""
    tp: Any = Spec
    clean: list[str | int] = []
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, tuple):  # a tagged union: this part is the tag
            tp = next((m for m in tp if _tag(m) == part), None)
            continue
        clean.append(part)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            tp = _field(tp, part)
        elif origin is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict and isinstance(part, str):
            tp = typing.get_args(tp)[1]
        else:
            tp = None
    return tuple(clean), _unwrap(tp)


def _tag(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel) and "kind" in model.model_fields:
        return typing.get_args(model.model_fields["kind"].annotation)[0]
    return None


def _issue(err: ErrorDetails, lines: Mapping[Loc, int]) -> SpecIssue:
    loc, end = _walk(err["loc"])
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "extra_forbidden":
        _, parent = _walk(err["loc"][:-1])
        message = "unknown key"
        if isinstance(parent, type) and issubclass(parent, BaseModel):
            names = [f.alias or n for n, f in parent.model_fields.items()]
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            message += f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)}"
    elif kind == "union_tag_not_found" and isinstance(end, tuple):
        message = f"needs a kind: one of {', '.join(str(_tag(m)) for m in end)}"
    else:
        message = _message(kind, ctx, value, err["msg"])
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        message = f"key {message}"
    return SpecIssue(_path(loc), message, _line(loc, lines))


def _message(kind: str, ctx: Mapping[str, Any], value: Any, default: str) -> str:
    got = f", got {value!r}" if value is not None and not isinstance(value, dict | list) else ""
    tag = value.get("kind", ctx.get("tag")) if isinstance(value, dict) else ctx.get("tag")
    simple = {
        "missing": "required",
        "greater_than_equal": f"must be ≥ {ctx.get('ge')}{got}",
        "greater_than": f"must be > {ctx.get('gt')}{got}",
        "less_than_equal": f"must be ≤ {ctx.get('le')}{got}",
        "less_than": f"must be < {ctx.get('lt')}{got}",
        "int_parsing": f"must be a whole number{got}",
        "int_from_float": f"must be a whole number{got}",
        "int_type": f"must be a whole number{got}",
        "float_parsing": f"must be a number{got}",
        "float_type": f"must be a number{got}",
        "bool_parsing": f"must be true or false{got}",
        "bool_type": f"must be true or false{got}",
        "string_type": f"must be a string{got}",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "literal_error": f"must be one of {ctx.get('expected')}{got}",
        "union_tag_invalid": f"kind must be one of {ctx.get('expected_tags')}, got {tag!r}",
        "invalid_key": "keys must be strings",
    }
    if kind in simple:
        return simple[kind]
    if kind == "too_short":
        return f"must hold at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must hold at most {ctx.get('max_length')} item(s)"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else default
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"must be {_PATTERN_MEANING.get(pattern, 'a string matching ' + pattern)}{got}"
    if kind == "value_error":
        return default.removeprefix("Value error, ")
    return default


# -- lenient section parse, for cross-section checks ---------------------------------------

_FAIL = object()


def _lenient(tp: Any, raw: Any, loc: Loc = (), broken: set[Loc] | None = None) -> Any:
    """Parse ``raw`` as ``tp``, salvaging what validates field by field; ``_FAIL`` if nothing.

    A spec with one bad column still gets its other columns cross-checked: the user
    sees every problem in one run rather than one section's worth at a time. Each
    location that is present but did not salvage goes into ``broken``, so the checks
    do not call a column that is merely invalid "unknown" (its own error says what is wrong).
    """
    try:
        return TypeAdapter(tp).validate_python(raw)
    except ValidationError:
        pass
    broken = set() if broken is None else broken
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(raw, dict):
        values: dict[str, Any] = {}
        for name, field in tp.model_fields.items():
            key = field.alias or name
            value = _lenient(field.annotation, raw[key], (*loc, key), broken) if key in raw else _FAIL
            if value is not _FAIL:
                values[name] = value
            elif field.is_required():
                return _FAIL
            elif key in raw:
                broken.add((*loc, key))
        return tp.model_construct(**values)
    if origin is dict and isinstance(raw, dict):
        value_type = typing.get_args(tp)[1]
        parsed: dict[str, Any] = {}
        for k, v in raw.items():
            value = _lenient(value_type, v, (*loc, str(k)), broken)
            if value is _FAIL or not isinstance(k, str):
                broken.add((*loc, str(k)))
            else:
                parsed[k] = value
        return parsed
    if origin is list and isinstance(raw, list):
        items = [_lenient(typing.get_args(tp)[0], item, (*loc, i), broken) for i, item in enumerate(raw)]
        return _FAIL if any(item is _FAIL for item in items) else items  # keep indices aligned
    return _FAIL


def _sections(data: Mapping[str, Any], spec: Spec | None) -> dict[str, Any]:
    """Each top-level section, parsed as far as it validates (None where nothing does).

    ``broken`` holds the locations (``("schema", "columns", "rpm")``) that are present but
    invalid, so the checks can stay quiet about them.
    """
    broken: set[Loc] = set()
    parts: dict[str, Any] = {"spec": spec}
    for name, field in Spec.model_fields.items():
        key = field.alias or name
        if spec is not None:
            parts[key] = getattr(spec, name)
        elif key not in data:
            parts[key] = None if field.is_required() else field.get_default(call_default_factory=True)
        else:
            value = _lenient(field.annotation, data[key], (key,), broken)
            if value is _FAIL:
                broken.add((key,))
            parts[key] = None if value is _FAIL else value
    parts["broken"] = frozenset(broken)
    return parts
