"""The fleet web page: one self-contained HTML document (inline CSS and SVG, no script, no fetches).

It works on an appliance with no internet, and its charts need no JavaScript to draw.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from html import escape
from typing import TYPE_CHECKING

from edgeml.central.page_drift import DRIFT_CSS, drift_bands

if TYPE_CHECKING:
    from edgeml.audit import AuditEntry
    from edgeml.central.gate import Evidence, GateDecision
    from edgeml.central.monitor import GroupStatus
    from edgeml.central.performance import NannyMLReport
    from edgeml.central.services.fleet import Fleet, WindowHealth
    from edgeml.central.services.retraining import RetrainingStatus
    from edgeml.telemetry.schema import RowsPoint

__all__ = ["render_fleet_page"]


CHART_W, CHART_H, PAD = 360, 90, 4

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2430; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; } h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
.muted { color: #667085; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e4e7ec; }
th { background: #f2f4f7; font-weight: 600; }
.online { color: #067647; } .offline { color: #b54708; } .decommissioned { color: #98a2b3; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; } table + .charts { margin-top: 1rem; }
figure { margin: 0; border: 1px solid #e4e7ec; border-radius: 6px; padding: .5rem; }
figcaption { font-size: .85rem; margin-bottom: .3rem; }
svg rect.bar { fill: #2e90fa; } svg line.axis { stroke: #98a2b3; }
svg polyline.estimated { fill: none; stroke: #7a5af8; stroke-width: 2; }
svg circle.estimated { fill: #7a5af8; } svg circle.realized { fill: #f04438; }
.legend-estimated { color: #7a5af8; } .legend-realized { color: #f04438; }
.breach { color: #b42318; font-weight: 600; } .calm { color: #067647; }
.counts span { margin-right: 1.2rem; }
"""


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _device_rows(fleet: Fleet) -> str:
    if not fleet.devices:
        return '<tr><td colspan="7" class="muted">No device registered yet.</td></tr>'
    out = []
    for d in fleet.devices:
        version = f"{d.serving_model} v{d.serving_version}" if d.serving_model else "—"
        out.append(
            "<tr>"
            f"<td>{escape(d.device_id)}</td>"
            f"<td>{escape(d.group or '—')}</td>"
            f"<td>{escape(d.profile)}</td>"
            f"<td>{escape(version)}</td>"
            f'<td title="{escape(d.last_seen.isoformat() if d.last_seen else "")}">'
            f"{_ago(d.seconds_since_seen)}</td>"
            f"<td>{d.spool_dropped}</td>"
            f'<td class="{d.state}">{d.state}</td>'
            "</tr>"
        )
    return "\n".join(out)


def _chart(points: list[RowsPoint], start: datetime, span: timedelta, bucket: timedelta) -> str:
    """Bars of rows per time bucket, on a shared time axis."""
    top = max(p.rows for p in points) or 1
    slots = max(1, round(span / bucket))
    width = (CHART_W - 2 * PAD) / slots
    bars = []
    for p in points:
        # a window ending after "now" (a device clock ahead) lands in the last slot, not past the chart
        slot = min(max(round((p.start - start) / bucket), 0), slots - 1)
        x = PAD + slot * width
        h = (CHART_H - 2 * PAD) * p.rows / top
        bars.append(
            f'<rect class="bar" x="{x:.1f}" y="{CHART_H - PAD - h:.1f}" width="{max(width - 1, 1):.1f}" '
            f'height="{h:.1f}"><title>{escape(p.start.isoformat(timespec="minutes"))}: {p.rows} rows</title>'
            "</rect>"
        )
    return (
        f'<svg role="img" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" '
        f'xmlns="http://www.w3.org/2000/svg"><line class="axis" x1="{PAD}" y1="{CHART_H - PAD}" '
        f'x2="{CHART_W - PAD}" y2="{CHART_H - PAD}"/>{"".join(bars)}</svg>'
    )


def _charts(rows: list[RowsPoint], start: datetime, span: timedelta) -> str:
    if not rows:
        return '<p class="muted">No telemetry in this period.</p>'
    bucket = span / 48
    by_group: dict[str | None, list[RowsPoint]] = defaultdict(list)
    for point in rows:
        by_group[point.group].append(point)
    figures = []
    for group in sorted(by_group, key=lambda g: (g is None, g or "")):
        points = by_group[group]
        name = escape(group or "no group")
        total = sum(p.rows for p in points)
        figures.append(
            f"<figure><figcaption><strong>{name}</strong> · {total:,} rows · peak "
            f"{max(p.rows for p in points):,} per {bucket.total_seconds() / 60:.0f} min</figcaption>"
            f"{_chart(points, start, span, bucket)}</figure>"
        )
    return f'<div class="charts">{"".join(figures)}</div>'


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _drift_cell(window: WindowHealth) -> str:
    if window.drift is None:
        return '<span class="muted">no manifest</span>'
    breaches = window.drift.breaches
    if not breaches:
        return f'<span class="calm">no drift ({len(window.drift.features)} checked)</span>'
    names = ", ".join(escape(f.feature) for f in breaches[:5]) + (" …" if len(breaches) > 5 else "")
    return f'<span class="breach">{len(breaches)} drifted: {names}</span>'


def _accuracy_chart(windows: list[WindowHealth], start: datetime, span: timedelta) -> str:
    """Estimated accuracy as a line, realized accuracy as dots, per window end."""
    values = [w.estimated.estimated for w in windows if w.estimated] + [
        w.realized.accuracy for w in windows if w.realized
    ]
    if not values:
        return '<p class="muted">no accuracy yet</p>'
    low = min(0.5, *values)

    def point(moment: datetime, value: float) -> tuple[float, float]:
        # the window still open ends after the page's "now": its point goes at the right edge, not past it
        moment = min(max(moment, start), start + span)
        x = PAD + (moment - start) / span * (CHART_W - 2 * PAD)
        return x, CHART_H - PAD - (value - low) / (1 - low) * (CHART_H - 2 * PAD)

    estimates = [point(w.end, w.estimated.estimated) for w in windows if w.estimated]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in estimates)
    # a dot per estimate: a polyline of one point (a version's first window) draws nothing
    marks = "".join(f'<circle class="estimated" cx="{x:.1f}" cy="{y:.1f}" r="2"/>' for x, y in estimates)
    dots = "".join(
        '<circle class="realized" cx="{:.1f}" cy="{:.1f}" r="3"/>'.format(*point(w.end, w.realized.accuracy))
        for w in windows
        if w.realized
    )
    return (
        f'<svg role="img" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" '
        f'xmlns="http://www.w3.org/2000/svg"><line class="axis" x1="{PAD}" y1="{CHART_H - PAD}" '
        f'x2="{CHART_W - PAD}" y2="{CHART_H - PAD}"/>'
        f'<polyline class="estimated" points="{line}"/>{marks}{dots}</svg>'
        f'<div class="muted">axis from {low:.0%} to 100% · <span class="legend-estimated">estimated</span> · '
        '<span class="legend-realized">realized</span></div>'
    )


def _model_health(windows: list[WindowHealth], start: datetime, span: timedelta) -> str:
    if not windows:
        return '<p class="muted">No telemetry in this period, so no drift or accuracy to show.</p>'
    series: dict[tuple[str, int, str | None], list[WindowHealth]] = defaultdict(list)
    for window in sorted(windows, key=lambda w: w.end):
        series[window.model, window.version, window.group].append(window)
    rows, figures = [], []
    for (model, version, group), found in sorted(
        series.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
    ):
        latest = found[-1]
        estimate = latest.estimated
        name = f"{escape(model)} v{version} · {escape(group or 'no group')}"
        rows.append(
            f"<tr><td>{name}</td><td>{escape(latest.end.isoformat(timespec='minutes'))}</td>"
            f"<td>{latest.rows:,}</td><td>{_drift_cell(latest)}</td>"
            f"<td>{_pct(estimate.estimated if estimate else None)}</td>"
            f"<td>{_pct(estimate.reference if estimate else None)}</td>"
            f"<td>{_pct(latest.realized.accuracy if latest.realized else None)}</td></tr>"
        )
        chart = _accuracy_chart(found, start, span)
        figures.append(f"<figure><figcaption><strong>{name}</strong></figcaption>{chart}</figure>")
    return (
        '<table id="model-health-table"><thead><tr><th>model · group</th><th>latest window end</th>'
        "<th>rows</th><th>drift</th><th>estimated accuracy</th><th>holdout accuracy</th>"
        "<th>realized accuracy</th></tr></thead><tbody>"
        + "".join(rows)
        + f'</tbody></table><div class="charts">{"".join(figures)}</div>'
    )


def _modes(windows: list[WindowHealth]) -> str:
    """Each model's compliance mode, as its newest version with a manifest says (docs/compliance.md)."""
    modes: dict[str, tuple[int, str]] = {}
    for w in windows:
        if w.compliance is not None and w.version >= modes.get(w.model, (0, ""))[0]:
            modes[w.model] = (w.version, w.compliance)
    if not modes:
        return ""
    items = ", ".join(
        f"{escape(m)} <strong>{escape(mode)}</strong>" for m, (_, mode) in sorted(modes.items())
    )
    return f'<p id="compliance-modes">compliance mode: {items}</p>'


def _rollouts(canaries: list[GateDecision] | None, actions: list[GateDecision]) -> str:
    if canaries is None:
        return '<p class="muted">The quality gate is off on this node (gate.enabled in central.yaml).</p>'
    decisions = canaries + [a for a in reversed(actions) if a not in canaries]
    if not decisions:
        return '<p class="muted">No canary is out, and the gate has not acted since this node started.</p>'
    rows = []
    for d in decisions:
        rows.append(
            f'<tr class="{escape(d.action)}"><td>{escape(d.model)} v{d.canary_version} vs '
            f"v{d.champion_version}</td><td>{escape(', '.join(d.groups) or 'all')}</td>"
            f"<td>{d.soaked_s:.0f} / {d.gate.soak_s:g} s</td><td>{escape(d.metric or '—')}</td>"
            f"<td>{_pct(_decided_by(d, d.canary))}</td><td>{_pct(_decided_by(d, d.champion))}</td>"
            f"<td><strong>{escape(d.action)}</strong></td><td>{escape(d.reason)}</td></tr>"
        )
    return (
        '<table id="rollouts"><thead><tr><th>canary vs champion</th><th>groups</th><th>soaked</th>'
        "<th>metric</th><th>canary</th><th>champion</th><th>decision</th><th>why</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def _retraining(status: RetrainingStatus | None) -> str:
    """The retraining policy, and each model's last champion comparison with its evidence."""
    if status is None:
        return '<p class="muted">The retraining status could not be read.</p>'
    triggers = "".join(f"<li>trigger: {escape(t)}</li>" for t in status.triggers)
    holds = "".join(f"<li>hold: {escape(h)}</li>" for h in status.holds)
    parts = [
        f'<p id="retraining">{escape(status.retraining)}</p><ul id="retrain-policy">{triggers}{holds}</ul>'
        f'<p class="muted">{escape(status.labelled_weight)}</p>'
    ]
    decision, job = status.last_decision, status.last_job
    if decision is not None:
        states = "".join(f"<li>{escape(t)}</li>" for t in decision.triggers)
        parts.append(
            f'<p id="retrain-decision"><b>last decision</b> ({decision.at:%Y-%m-%d %H:%M:%S} UTC): '
            f"{escape(decision.reason)}</p><ul>{states}</ul>"
        )
    if job is not None:
        why = f", triggered by {job['reason']}" if job.get("reason") else ""
        parts.append(
            f'<p id="retrain-job">last job {escape(job["job_id"])}: {escape(job["state"] + why)}</p>'
        )
    for c in status.comparisons:
        champion = f"v{c.champion}" if c.champion else "none yet"
        rows = "".join(
            f"<tr><td>{escape(e['name'])}</td><td>{e['rows']:,}</td>"
            f"<td>{_metric(e['challenger'].get(c.metric))}</td><td>{_metric(e['champion'].get(c.metric))}</td></tr>"
            for e in c.evidence
        )
        gates = "".join(
            f'<li class="{"calm" if g["passed"] else "breach"}">'
            f"{escape(g['name'])}: {escape(g['detail'])}</li>"
            for g in c.gates
        )
        parts.append(
            f"<h3>{escape(c.model)}: challenger v{escape(c.challenger)} vs champion {escape(champion)}</h3>"
            + (
                f"<table><thead><tr><th>rows</th><th>count</th><th>challenger {escape(c.metric)}</th>"
                f"<th>champion</th></tr></thead><tbody>{rows}</tbody></table>"
                if rows
                else ""
            )
            + f"<ul>{gates}</ul><p>{escape(c.outcome)}</p>"
        )
    if not status.comparisons:
        parts.append('<p class="muted">No champion comparison yet.</p>')
    return "".join(parts)


def _metric(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _decided_by(decision: GateDecision, side: Evidence) -> float | None:
    """The side's accuracy by the metric that decided (none: too little evidence yet)."""
    if decision.metric == "realized":
        return side.realized
    return side.estimated if decision.metric == "estimated" else None


def _nannyml(statuses: list[GroupStatus] | None) -> str:
    """NannyML's last pass per model version and group: its alerts and estimate, or why it did not run."""
    runs = [(s, s.nannyml) for s in statuses or [] if s.nannyml is not None]
    if statuses is None:
        return '<p class="muted">The watch is off (monitor.enabled: false).</p>'
    if not runs:
        return '<p class="muted">NannyML has not looked at any group yet.</p>'
    body = []
    for status, run in runs:
        report = run.report
        if report is None:
            found = f'<td colspan="3" class="muted">{escape(run.reason or "")}</td>'
        else:
            alerts = [d.feature for d in report.drift if d.alert]
            drift = (
                f'<span class="breach">{escape(", ".join(alerts))}</span>'
                if alerts
                else '<span class="calm">none</span>'
            )
            note = f'<div class="muted">{escape(run.note)}</div>' if run.note else ""
            found = f"<td>{report.rows:,}{note}</td><td>{drift}</td><td>{_estimate(report)}</td>"
        body.append(
            f"<tr><td>{escape(status.model)} v{status.version}</td><td>{escape(status.group or '')}</td>"
            f"<td>{escape(run.at.isoformat(timespec='seconds'))}</td>{found}</tr>"
        )
    return (
        '<table id="nannyml"><thead><tr><th>model</th><th>group</th><th>looked at</th><th>sampled rows</th>'
        "<th>univariate drift alerts</th><th>estimated performance</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _estimate(report: NannyMLReport) -> str:
    estimate = report.performance
    if estimate is None:
        return f'<span class="muted">{escape(report.skipped or "none")}</span>'
    band = (
        f" ({estimate.lower:.3f}–{estimate.upper:.3f})"
        if estimate.lower is not None and estimate.upper is not None
        else ""
    )
    text = f"{escape(estimate.estimator)} {escape(estimate.metric)} {estimate.value:.3f}{band}"
    return f'<span class="breach">{text}: alert</span>' if estimate.alert else text


def _audit(entries: list[AuditEntry] | None) -> str:
    if entries is None:
        return '<p class="muted">No object store is configured, so there is no audit trail here.</p>'
    if not entries:
        return '<p class="muted">The audit trail is empty.</p>'

    def version(state: object) -> str:
        return f"v{state['version']}" if isinstance(state, dict) and "version" in state else "—"

    rows = "".join(
        f"<tr><td>{e.seq}</td><td>{escape(e.at[:19])}</td><td>{escape(e.actor)}</td>"
        f"<td>{escape(e.action)}</td><td>{escape(e.subject)}</td>"
        f"<td>{version(e.before)} → {version(e.after)}</td><td>{escape(e.reason)}</td></tr>"
        for e in entries
    )
    return (
        '<table id="audit"><thead><tr><th>#</th><th>when (UTC)</th><th>who</th><th>action</th>'
        f"<th>subject</th><th>version</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_fleet_page(
    fleet: Fleet,
    rows: list[RowsPoint],
    span: timedelta,
    health: list[WindowHealth],
    *,
    canaries: list[GateDecision] | None = None,
    gate_actions: list[GateDecision] | None = None,
    audit: list[AuditEntry] | None = None,
    nannyml: list[GroupStatus] | None = None,
    retraining: RetrainingStatus | None = None,
) -> str:
    """The page: devices, rows per group, drift and accuracy, NannyML, canaries, the latest audit entries.

    ``canaries`` None: the quality gate is off; ``audit`` None: there is no store to read it from;
    ``nannyml`` (the watch's latest round) None: the watch is off.
    """
    start = fleet.generated_at - span
    counts = " ".join(
        f'<span class="{state}">{count} {state}</span>' for state, count in fleet.counts.items()
    )
    hours = span.total_seconds() / 3600
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="30">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>edgeml fleet</title><style>{_CSS}{DRIFT_CSS}</style></head>
<body>
<h1>edgeml fleet</h1>
<p class="muted">as of {escape(fleet.generated_at.isoformat(timespec="seconds"))};
offline after {fleet.offline_after_s:.0f} s of silence</p>
<p class="counts">{counts}</p>
<h2>Devices</h2>
<table id="devices"><thead><tr><th>device</th><th>group</th><th>profile</th><th>serving</th>
<th>last seen</th><th>spool drops</th><th>state</th></tr></thead>
<tbody>
{_device_rows(fleet)}
</tbody></table>
<h2>Rows predicted per device group, last {hours:g} h</h2>
{_charts(rows, start, span)}
<h2>Drift and accuracy per model version and device group</h2>
{_modes(health)}
<section id="model-health">
{_model_health(health, start, span)}
</section>
<h2>Drift per feature: value and threshold band</h2>
<section id="drift-bands">
{drift_bands(health, start, span)}
</section>
<h2>NannyML on row samples</h2>
{_nannyml(nannyml)}
<h2>Canaries and the quality gate</h2>
{_rollouts(canaries, gate_actions or [])}
<h2>Retraining and the champion</h2>
{_retraining(retraining)}
<h2>Latest changes (audit trail)</h2>
{_audit(audit)}
</body></html>
"""
