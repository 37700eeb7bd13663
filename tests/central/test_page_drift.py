"""The fleet page's drift charts: a window out of its band is drawn red, its band shaded beside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edgeml.central.drift import DriftReport, FeatureDrift, MethodScore
from edgeml.central.page_drift import drift_bands
from edgeml.central.services.fleet import WindowHealth


def _window(end: datetime, value: float, upper: float, *, own: bool = False) -> WindowHealth:
    breached = value > upper
    feature = FeatureDrift(
        feature="temperature",
        kind="feature",
        method="js",
        value=value,
        threshold=upper,
        breached=breached,
        rows=500,
        reference_rows=4000,
        missing=0,
        out_of_range=0,
        counts=[],
        reference_counts=[],
        scores=[MethodScore(method="js", value=value, threshold=upper, breached=breached)],
    )
    report = DriftReport(
        model="pump",
        version=2,
        group="line-b",
        start=end - timedelta(minutes=10),
        end=end,
        rows=500,
        features=[feature],
        group_reference=own,
    )
    return WindowHealth("pump", 2, "line-b", report.start, end, 500, report, None, None)


def test_a_drifted_window_is_red_and_the_latest_says_whether_it_is_in_band() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    windows = [
        _window(now - timedelta(minutes=30), 0.41, 0.08),
        _window(now - timedelta(minutes=20), 0.05, 0.09, own=True),
    ]
    html = drift_bands(windows, now - timedelta(hours=1), timedelta(hours=1))
    assert html.count("<figure ") == 1
    assert html.count('<circle class="drift"') == 1
    assert html.count('<circle class="ok"') == 1
    assert (
        'js 0.0500, band 0.0000–0.0900: <span class="calm">in band</span> · line-b\'s own reference' in html
    )
    assert "0.4100 (band 0.0000–0.0800, 500 rows)" in html  # the red point's tooltip
    band = html.split('<polygon class="band" points="')[1].split('"')[0].split()
    assert len(band) == 4  # two windows' upper bounds, then their lower bounds back
    assert drift_bands([], now, timedelta(hours=1)).startswith('<p class="muted">No drift judged')
