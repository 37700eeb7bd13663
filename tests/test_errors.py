"""Every error the central node and the telemetry store raise is in the tree, with its HTTP status."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgeml
from edgeml import errors

SRC = Path(edgeml.__file__).parent


@pytest.mark.parametrize("part", ["central", "telemetry"])
def test_exception_classes_live_only_in_the_error_tree(part: str) -> None:
    defined = [
        f"{path.relative_to(SRC)}:{node.name}"
        for path in (SRC / part).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases)
    ]
    assert defined == []


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
