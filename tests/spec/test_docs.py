"""The generated spec reference and the one-screen summary."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from rich.console import Console

import edgeml
from edgeml.features.expr import FUNCTIONS
from edgeml.spec import load_spec
from edgeml.spec import models as m
from edgeml.spec.docs import render_reference
from edgeml.spec.summary import render_summary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((Path(edgeml.__file__).parent / "examples").glob("*.yaml"))
MODELS = [
    cls
    for _, cls in inspect.getmembers(m, inspect.isclass)
    if issubclass(cls, BaseModel) and cls.__module__ == m.__name__
]


def test_docs_spec_md_is_the_generated_reference() -> None:
    committed = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert committed == render_reference(), "docs/spec.md is stale: run `edgeml spec docs --out docs/spec.md`"


def test_the_models_module_has_models() -> None:
    assert m.Spec in MODELS
    assert len(MODELS) >= 20


@pytest.mark.parametrize("model", MODELS, ids=lambda c: c.__name__)
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    missing = [name for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert missing == [], f"{model.__name__} fields without a description: {missing}"


def _reachable(tp: Any, seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every model a spec can contain, following field annotations from ``tp``."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp not in seen:
            seen.add(tp)
            for field in tp.model_fields.values():
                _reachable(field.annotation, seen)
        return seen
    if typing.get_origin(tp) is typing.Annotated:
        return _reachable(typing.get_args(tp)[0], seen)
    for arg in typing.get_args(tp):
        if not isinstance(arg, str | int | types.NoneType):
            _reachable(arg, seen)
    return seen


def test_every_model_a_spec_can_hold_is_in_the_reference_with_a_summary_line() -> None:
    reference = render_reference()
    for model in sorted(_reachable(m.Spec, set()), key=lambda c: c.__name__):
        assert f"### {model.__name__}\n" in reference, f"{model.__name__} is missing from the reference"
        assert (model.__doc__ or "").strip(), f"{model.__name__} has no docstring for the reference"


def test_the_reference_lists_every_key_and_every_expression_function() -> None:
    reference = render_reference()
    for model in _reachable(m.Spec, set()):
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in reference
    for function in FUNCTIONS:
        assert f"`{function}`" in reference
        assert function in (m.RowFeature.model_fields["expr"].description or "")


def test_the_reference_shows_required_keys_and_aliases() -> None:
    reference = render_reference()
    assert "| `schema` | Schema | **required** |" in reference
    assert "| `int` | bool | `False` |" in reference  # the YAML spelling, not int_
    assert "int_" not in reference


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_summary_renders_every_example(path: Path) -> None:
    spec = load_spec(path)
    console = Console(record=True, width=100, color_system=None)
    console.print(render_summary(spec))
    text = console.export_text()
    assert "spec is valid" in text
    assert spec.name in text
    assert spec.task in text
    for source in spec.sources:
        assert f"source {source.name}" in text
    for profile in spec.profiles:
        assert profile in text
    assert spec.metric in text
    if spec.target:
        assert f"target {spec.target}" in text
    assert max(len(line) for line in text.splitlines()) <= 100


@pytest.mark.parametrize("mode", ["none", "gdpr", "hipaa", "sox"])
def test_spec_check_says_what_the_compliance_mode_will_do(mode: str) -> None:
    from edgeml.spec.summary import compliance_lines

    faults = next(p for p in EXAMPLES if p.stem == "pump-faults")
    spec = load_spec(faults).model_copy(update={"compliance": mode, "retention_days": 90})
    text = "\n".join(compliance_lines(spec))
    assert "pii never leaves the lake raw: operator" in text
    assert ("row samples of non-pii inputs" in text) == (mode == "none")
    assert ("edgeml data erase" in text) == (mode in ("gdpr", "hipaa"))
    assert ("server_side_encryption" in text) == (mode == "hipaa")
    assert ("edgeml rollout approve" in text) == (mode == "sox")
    assert "lake retention: 90 days" in text
    assert "telemetry and labels 90 days at most" in text
    assert ("merged on the device" in text and "edgeml central seal" in text) == (mode == "hipaa")
    assert ("(data.read)" in text) == (mode == "hipaa")
    assert ("MLflow keeps with each training run are sealed" in text) == (mode == "hipaa")
    console = Console(record=True, width=200, color_system=None)
    console.print(render_summary(spec))
    assert f"compliance {mode}" in console.export_text()
