"""The fleet page's drift charts: per model version, device group and feature, the deciding method's
value in each window beside the band it is judged by (inline SVG, no script).

A point outside the shaded band is drift (drawn red). The band is the one each window was judged by:
it narrows or widens with the window's rows, and for a group the version was trained for it is the
group's own.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeml.central.drift import FeatureDrift
    from edgeml.central.services.fleet import WindowHealth

__all__ = ["DRIFT_CSS", "drift_bands"]

W, H, PAD = 260, 80, 4

DRIFT_CSS = """
svg polygon.band { fill: #d1e9ff; stroke: none; }
svg polyline.value { fill: none; stroke: #1d2430; stroke-width: 1.5; }
svg circle.ok { fill: #1d2430; } svg circle.drift { fill: #f04438; }
"""

Key = tuple[str, int, str | None, str]


def _series(windows: list[WindowHealth]) -> dict[Key, list[tuple[datetime, FeatureDrift, bool]]]:
    """Per (model, version, group, feature), its judged windows in time order (and whether the
    window was judged by the group's own reference)."""
    out: dict[Key, list[tuple[datetime, FeatureDrift, bool]]] = defaultdict(list)
    for w in sorted(windows, key=lambda w: w.end):
        if w.drift is None:
            continue
        for f in w.drift.features:
            out[w.model, w.version, w.group, f.feature].append((w.end, f, w.drift.group_reference))
    return out


def _chart(points: list[tuple[datetime, FeatureDrift, bool]], start: datetime, span: timedelta) -> str:
    top = max(max(f.value, f.threshold) for _, f, _ in points) * 1.1 or 1.0

    def x(moment: datetime) -> float:
        moment = min(max(moment, start), start + span)
        return PAD + (moment - start) / span * (W - 2 * PAD)

    def y(value: float) -> float:
        return H - PAD - value / top * (H - 2 * PAD)

    upper = [(x(at), y(f.threshold)) for at, f, _ in points]
    lower = [(x(at), y(f.lower or 0.0)) for at, f, _ in reversed(points)]
    if len(points) == 1:  # a band of one window: a short bar, so it shows
        (ux, uy), (lx, ly) = upper[0], lower[0]
        upper, lower = [(ux - 3, uy), (ux + 3, uy)], [(lx + 3, ly), (lx - 3, ly)]
    band = " ".join(f"{px:.1f},{py:.1f}" for px, py in upper + lower)
    line = " ".join(f"{x(at):.1f},{y(f.value):.1f}" for at, f, _ in points)
    dots = "".join(
        f'<circle class="{"drift" if f.breached else "ok"}" cx="{x(at):.1f}" cy="{y(f.value):.1f}" r="2.5">'
        f"<title>{escape(at.isoformat(timespec='minutes'))}: {f.value:.4f} "
        f"(band {f.lower or 0:.4f}–{f.threshold:.4f}, {f.rows:,} rows)</title></circle>"
        for at, f, _ in points
    )
    return (
        f'<svg role="img" width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg">'
        f'<polygon class="band" points="{band}"/><line class="axis" x1="{PAD}" y1="{H - PAD}" '
        f'x2="{W - PAD}" y2="{H - PAD}"/><polyline class="value" points="{line}"/>{dots}</svg>'
    )


def drift_bands(windows: list[WindowHealth], start: datetime, span: timedelta) -> str:
    """One small chart per model version, group and feature judged in the period."""
    series = _series(windows)
    if not series:
        return (
            '<p class="muted">No drift judged in this period (no telemetry, or no manifest to judge by).</p>'
        )
    figures = []
    for (model, version, group, feature), points in sorted(
        series.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "", kv[0][3])
    ):
        _, last, own = points[-1]
        state = '<span class="breach">drift</span>' if last.breached else '<span class="calm">in band</span>'
        reference = f" · {escape(group or '')}'s own reference" if own else ""
        figures.append(
            f'<figure data-feature="{escape(feature)}" data-group="{escape(group or "")}">'
            f"<figcaption><strong>{escape(feature)}</strong> · {escape(model)} v{version} · "
            f"{escape(group or 'no group')}<br>{escape(last.method)} {last.value:.4f}, band "
            f"{last.lower or 0:.4f}–{last.threshold:.4f}: {state}{reference}</figcaption>"
            f"{_chart(points, start, span)}</figure>"
        )
    return f'<div class="charts">{"".join(figures)}</div>'
