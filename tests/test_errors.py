"""Every error edgeml raises is in the tree (``edgeml/errors.py``), each with its HTTP status."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgeml
from edgeml import errors

SRC = Path(edgeml.__file__).parent


def _raisable(base: ast.expr) -> bool:
    name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
    return name.endswith(("Error", "Exception")) or name in {"EdgemlError", "BundleRejected"}


@pytest.mark.parametrize(
    "part", sorted(p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__")
)
def test_exception_classes_live_only_in_the_error_tree(part: str) -> None:
    defined = [
        f"{path.relative_to(SRC)}:{node.name}"
        for path in (SRC / part).rglob("*.py")
        if not path.name.endswith("_pb2.py")  # generated gRPC messages
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and any(_raisable(b) for b in node.bases)
    ]
    assert defined == []


def test_no_module_outside_the_tree_defines_an_exception() -> None:
    loose = [
        path.name
        for path in SRC.glob("*.py")
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and any(_raisable(b) for b in node.bases)
    ]
    assert loose == []


def test_every_error_carries_an_http_status_and_a_body() -> None:
    tree = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, errors.EdgemlError)]
    assert len(tree) > 20
    for error in tree:
        assert 400 <= error.http_status < 600, error
    assert errors.Overloaded("busy").http_status == 429
    assert errors.StoreClosed("closed").http_status == 503
    assert errors.BatchConflict("reused").http_detail() == [
        {"loc": ["body", "batch_id"], "msg": "reused", "type": "batch_id_reused"}
    ]
    invalid = errors.InvalidRequest([{"loc": ["body", "rows"], "msg": "must be ≥ 0", "type": "x"}])
    assert (invalid.http_status, str(invalid)) == (422, "body.rows: must be ≥ 0")
