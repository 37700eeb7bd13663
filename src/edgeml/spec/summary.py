"""A one-screen summary of a valid spec, for ``edgeml spec check``."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from edgeml.spec.models import FileSource, HttpSource, MqttSource, Source, Spec, SqlSource

__all__ = ["render_summary"]


def _source_detail(source: Source) -> str:
    if isinstance(source, FileSource):
        return f"{source.format} files at {source.path}"
    if isinstance(source, SqlSource):
        return f"query on {source.url.split('://', 1)[0]}"
    if isinstance(source, HttpSource):
        return f"{source.url} ({source.pagination.kind} pages, ≤{source.rate_limit_per_s:g} req/s)"
    assert isinstance(source, MqttSource)
    return f"{', '.join(source.topics)} on {source.broker} (QoS {source.qos})"


def render_summary(spec: Spec) -> Group:
    """Rich renderable: what the pipeline reads, learns, checks and ships."""
    schema = spec.schema_
    pii = [n for n, c in schema.columns.items() if c.pii]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    table.add_row("pipeline", f"{spec.name}" + (f" — {spec.description}" if spec.description else ""))
    for source in spec.sources:
        table.add_row(f"source {source.name}", f"{source.kind}: {_source_detail(source)}")
    roles = ", ".join(
        f"{r} {c}" for r, c in (("timestamp", schema.timestamp), ("entity", schema.entity)) if c
    )
    table.add_row(
        "schema",
        f"{len(schema.columns)} columns"
        + (f"; {roles}" if roles else "")
        + (f"; pii: {', '.join(pii)}" if pii else ""),
    )
    table.add_row("task", f"{spec.task}" + (f", target {spec.target}" if spec.target else ""))
    inputs = spec.input_columns()
    table.add_row(
        "model inputs",
        f"{len(inputs)} columns ({', '.join(inputs)}), "
        f"{len(spec.features.row)} row features, {len(spec.features.window)} window features",
    )
    errors = sum(e.severity == "error" for e in spec.expectations)
    table.add_row(
        "expectations", f"{len(spec.expectations)} ({errors} error, {len(spec.expectations) - errors} warn)"
    )
    s = spec.search
    table.add_row(
        "search",
        f"{s.trials} trials over {', '.join(s.families)}; {spec.metric} "
        f"({spec.metric_mode}); scheduler {s.scheduler}; seed {s.seed}",
    )
    gates = [
        f"{m} {'≥ ' + format(t.min, 'g') if t.min is not None else ''}"
        f"{' ' if t.min is not None and t.max is not None else ''}"
        f"{'≤ ' + format(t.max, 'g') if t.max is not None else ''}"
        for m, t in spec.gates.thresholds.items()
    ]
    gates.append(f"beat champion by {spec.gates.champion_margin:g}")
    table.add_row("gates", "; ".join(gates))
    table.add_row("profiles", ", ".join(spec.profiles))
    r = spec.rollout
    table.add_row(
        "rollout",
        f"channel {r.channel}, canary {r.canary_percent:g}%, groups {', '.join(r.groups) or 'all'}",
    )
    table.add_row("retrain", retrain_line(spec))
    for n, line in enumerate(compliance_lines(spec)):
        table.add_row(f"compliance {spec.compliance}" if n == 0 else "", line)
    return Group(Text("✓ spec is valid", style="bold green"), table)


def retrain_line(spec: Spec) -> str:
    """The central node's retraining policy in one line: what triggers a job, what holds one."""
    from edgeml.spec.types import _format_duration

    t, h = spec.retrain.triggers, spec.retrain.holds
    on = ["drift"] if t.drift else []
    on += [f"accuracy drop > {t.accuracy_drop:g}"] if t.accuracy_drop is not None else []
    on += [f"{t.label_volume} new labels"] if t.label_volume is not None else []
    on += [f"every {_format_duration(t.schedule)}"] if t.schedule is not None else []
    held = [f"{_format_duration(h.failure_cooldown)} after a failure"]
    held += [f"cooldown {_format_duration(h.cooldown)}"] if h.cooldown is not None else []
    held += [] if h.no_new_data else ["retrains unchanged data"]
    held += [f"≤ {n}/{per}" for n, per in ((h.budget.per_day, "day"), (h.budget.per_week, "week")) if n]
    return f"on {', '.join(on) if on else 'nothing (no trigger on)'}; {', '.join(held)}"


def compliance_lines(spec: Spec) -> list[str]:
    """What the spec's compliance mode will do with this spec (docs/compliance.md has the why)."""
    from edgeml.features.expr import parse_expression

    pii = sorted(n for n, c in spec.schema_.columns.items() if c.pii)
    derived = sorted(
        [f.name for f in spec.features.row if parse_expression(f.expr).columns & set(pii)]
        + [w.name for w in spec.features.window if w.column in pii]
    )
    mode = spec.compliance
    lines = []
    if pii:
        lines.append(
            f"pii never leaves the lake raw: {', '.join(pii)}"
            + (f" (and derived: {', '.join(derived)})" if derived else "")
            + " — no reference histogram, golden values synthesised, never in samples or reference rows"
        )
    if mode == "none":
        lines.append("devices send row samples of non-pii inputs; reference rows published for NannyML")
    else:
        lines.append("no row samples from devices and no reference rows: drift from histograms only")
    if mode in ("gdpr", "hipaa"):
        lines.append("pii columns barred from model inputs, directly or through features")
        lines.append('erasure: `edgeml data erase SPEC --where "<column> = <value>"` (audited)')
    retention = f"{spec.retention_days} days" if spec.retention_days else "none set (retention_days)"
    lines.append(f"lake retention: {retention}; `edgeml data retain SPEC` enforces it")
    if spec.retention_days:
        lines.append(
            f"the central node keeps this model's telemetry and labels {spec.retention_days} days at most"
        )
    if mode == "hipaa":
        lines.append(
            f"telemetry histogram cells under {spec.min_bin_count} rows are merged on the device "
            "(min_bin_count)"
        )
        lines.append(
            "store encryption at rest, checked before rows land: an empty local store is sealed "
            "(its key in keys/store.key), one holding clear objects is refused; S3/MinIO needs "
            "store.s3.server_side_encryption; the central node's telemetry file: `edgeml central seal` "
            "(a node in clear refuses this model's telemetry)"
        )
        lines.append(
            "the holdout rows MLflow keeps with each training run are sealed with the store's key "
            "(export and erasure open them through it)"
        )
        lines.append("every command's read of lake data is recorded on the audit trail (data.read)")
    if mode == "sox":
        lines.append(
            "every build, spec change, key, alias move and rollout is audited; stable needs "
            "`edgeml rollout approve` by a second key; audit kept ≥ 7 years (`edgeml audit export`)"
        )
    return lines
