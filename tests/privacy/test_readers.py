"""Every function that reads a lake part's rows has its read on the audit trail (hipaa).

Rows of a dataset leave the store through ``read_parts`` (whole parts), ``part_file`` (streamed
batches), or pyarrow's parquet reader called directly. A function calling one records the read
itself (``record_read``), or is named here with the function that records the read for it — a Ray
task's driver, the function that handed it the parts. A reader added without either fails this
test: record it, or name its recorder.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: the calls that turn a part into rows
READS = {"read_parts", "part_file", "pq.read_table", "pq.ParquetFile"}
#: where edgeml's own reading functions are defined: not readers themselves
PRIMITIVES = {"edgeml.ingest.lake.read_parts", "edgeml.train.stream.part_file"}

#: reader -> the functions whose records cover its read (each must call record_read or audit itself)
RECORDED_BY: dict[str, tuple[str, ...]] = {
    # Ray tasks of validation: the driver records the lake parts it hands out
    "edgeml.validate.run._key_hashes": ("edgeml.validate.run.validate",),
    "edgeml.validate.run._validate_part": ("edgeml.validate.run.validate",),
    # the validated parts come from validated_parts, which records them
    "edgeml.validate.run.load_validated": ("edgeml.validate.run.validated_parts",),
    "edgeml.features.build._split_part": ("edgeml.validate.run.validated_parts",),
    "edgeml.features.build._read_part": ("edgeml.validate.run.validated_parts",),  # a feature task's
    # feature tables: the parts pass through _read_features (small data and streamed alike)
    "edgeml.train.data._feature_table": ("edgeml.train.data._read_features",),
    "edgeml.train.data.sample_features": ("edgeml.train.data._read_features",),
    "edgeml.train.stream.SplitStream.batches": ("edgeml.train.data._read_features",),
    # erasure and retention read every part to rewrite it: their own audit entries say so
    "edgeml.privacy.rewrite._read": ("edgeml.privacy.erase.erase", "edgeml.privacy.retain.retain"),
}


def _functions() -> dict[str, ast.AST]:
    """Every top-level function and method of edgeml, by qualified name."""
    out: dict[str, ast.AST] = {}
    for path in sorted((SRC / "edgeml").rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out[f"{module}.{node.name}"] = node
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        out[f"{module}.{node.name}.{item.name}"] = item
    return out


def _calls(node: ast.AST) -> set[str]:
    """Names called anywhere in ``node`` (nested functions included): ``f`` for ``f(...)``, and both
    ``f`` and ``x.f`` for ``x.f(...)``."""
    names = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            if isinstance(call.func, ast.Name):
                names.add(call.func.id)
            elif isinstance(call.func, ast.Attribute):
                names.add(call.func.attr)
                if isinstance(call.func.value, ast.Name):
                    names.add(f"{call.func.value.id}.{call.func.attr}")
    return names


def _records(node: ast.AST) -> bool:
    return bool(_calls(node) & {"record_read", "AuditLog"})


def test_every_reader_of_lake_parts_records_its_read_or_names_who_does() -> None:
    functions = _functions()
    readers = {name for name, node in functions.items() if _calls(node) & READS and name not in PRIMITIVES}
    assert len(readers) >= 10, readers  # the scan sees the readers there are
    unrecorded = sorted(r for r in readers if not _records(functions[r]) and r not in RECORDED_BY)
    assert unrecorded == [], "record these reads (privacy.access.record_read) or name their recorder"
    for reader, recorders in RECORDED_BY.items():
        assert reader in readers, f"{reader} reads no lake part any more: strike it"
        for recorder in recorders:
            assert recorder in functions, recorder
            assert _records(functions[recorder]), f"{recorder} records no read for {reader}"


def test_the_scan_catches_a_reader_that_records_nothing() -> None:
    node = ast.parse("def peek(store, parts):\n    return read_parts(store, parts)\n").body[0]
    assert _calls(node) & READS
    assert not _records(node)
    recorded = ast.parse(
        "def peek(store, spec, parts):\n    record_read(store, spec, 'lake', None, 1)\n"
        "    return read_parts(store, parts)\n"
    ).body[0]
    assert _records(recorded)
