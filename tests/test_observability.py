from __future__ import annotations

import re

import pytest

from edgeml import observability
from edgeml.errors import ConfigError
from edgeml.settings import TracingSettings

UNIT_SUFFIXES = (
    "_total",
    "_seconds",
    "_bytes",
    "_info",
    "_ratio",
    "_celsius",
    "_batches",  # counts of things are units too
    "_devices",
)


def _ours() -> list[tuple[str, str]]:
    return [(m.name, m.type) for m in observability.REGISTRY.collect() if m.name.startswith("edgeml_")]


def test_every_edgeml_metric_is_prefixed_and_names_its_unit() -> None:
    metrics = _ours()
    assert len(metrics) >= 4
    for name, kind in metrics:
        assert re.fullmatch(r"edgeml_[a-z0-9_]+", name)
        full = name + ("_total" if kind == "counter" else "")
        assert full.endswith(UNIT_SUFFIXES), f"{name} names no unit"


def test_metrics_are_defined_only_in_the_observability_module() -> None:
    from pathlib import Path

    src = Path(observability.__file__).parent
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "observability.py"
        and re.search(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"", p.read_text())
        and "prometheus_client" in p.read_text()
    ]
    assert offenders == []


def test_render_metrics_exposes_build_info() -> None:
    text = observability.render_metrics().decode()
    assert 'edgeml_build_info{version="' in text
    assert "process_cpu_seconds_total" in text


def test_track_store_operation_counts_errors() -> None:
    sample = observability.REGISTRY.get_sample_value
    labels = {"backend": "test", "operation": "put", "outcome": "error"}
    before = sample("edgeml_store_operations_total", labels) or 0.0
    with pytest.raises(RuntimeError), observability.track_store_operation("test", "put"):
        raise RuntimeError("boom")
    assert sample("edgeml_store_operations_total", labels) == before + 1


def test_tracing_otlp_needs_an_endpoint() -> None:
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        observability.setup_tracing(TracingSettings(exporter="otlp"))


def test_tracing_none_is_a_no_op_tracer() -> None:
    observability.setup_tracing(TracingSettings())
    with observability.get_tracer().start_as_current_span("x") as span:
        assert not span.is_recording()


def test_call_sites_touch_no_label_plumbing() -> None:
    from pathlib import Path

    src = Path(observability.__file__).parent
    offenders = {
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "observability.py" and re.search(r"\b[A-Z][A-Z_]+\.(labels|remove)\(", p.read_text())
    }
    assert offenders == set()
