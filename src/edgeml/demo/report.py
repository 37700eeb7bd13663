"""The demo's report page: what happened, as plots, in one self-contained HTML file.

Sections: data quality (rows landed, kept, quarantined; expectations), training (holdout
metrics of each version), drift over time per device group, estimated vs realized accuracy,
and the rollout timeline. Images are inline PNGs, so the file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeml.demo.common import DemoResult

__all__ = ["back_to_baseline", "drift_lines", "drift_section", "write_report"]


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(width: float = 7.5, height: float = 3.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _close(figure: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def _data_quality(result: DemoResult) -> str:
    if result.ingest is None or result.validation is None:
        return ""
    source = result.ingest.sources[0]
    figure, axes = _figure(7.5, 2.4)
    labels = ["readings landed", "into the lake", "quarantined", "valid after checks"]
    values = [source.rows_in, source.rows_clean, source.rows_quarantined, result.validation.rows_valid]
    axes.barh(labels[::-1], values[::-1], color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][::-1])
    for i, v in enumerate(values[::-1]):
        axes.text(v, i, f" {v:,}", va="center")
    axes.set_title("Data quality")
    image = _png(figure)
    _close(figure)
    checks = "".join(
        f"<li>{html.escape(o.name)}: {'pass' if o.passed else 'FAIL'} {html.escape(o.detail)}</li>"
        for o in result.validation.outcomes
    )
    return f'<h2>Data quality</h2><img src="data:image/png;base64,{image}"><ul>{checks}</ul>'


def _training(result: DemoResult, versions: dict[int, dict[str, float]]) -> str:
    if not versions:
        return ""
    metrics = sorted({m for values in versions.values() for m in values if m != "log_loss"})
    figure, axes = _figure(7.5, 2.8)
    width = 0.8 / len(versions)
    for k, (version, values) in enumerate(sorted(versions.items())):
        xs = [i + k * width for i in range(len(metrics))]
        axes.bar(xs, [values.get(m, 0.0) for m in metrics], width, label=f"v{version}")
    axes.set_xticks([i + width * (len(versions) - 1) / 2 for i in range(len(metrics))], metrics)
    axes.set_ylim(0, 1)
    axes.legend()
    axes.set_title("Holdout metrics per model version")
    image = _png(figure)
    _close(figure)
    family = f" ({result.training.family}, {result.training.trials} trials)" if result.training else ""
    return f'<h2>Training{html.escape(family)}</h2><img src="data:image/png;base64,{image}">'


def _history(result: DemoResult) -> list[dict[str, Any]]:
    if result.fleet is None or not result.fleet.drift_rounds:
        return []
    history: list[dict[str, Any]] = result.fleet.drift_rounds[-1].get("history", [])
    return history


def _series(history: list[dict[str, Any]], field: str) -> dict[str, tuple[list[datetime], list[float]]]:
    out: dict[str, tuple[list[datetime], list[float]]] = {}
    for row in history:
        value = row.get(field)
        if value is None:
            continue
        key = f"{row['group']} v{row['version']}"
        times, values = out.setdefault(key, ([], []))
        times.append(datetime.fromisoformat(row["at"]))
        values.append(float(value))
    return out


Point = dict[str, Any]


def drift_lines(history: list[dict[str, Any]]) -> dict[str, dict[str, list[Point]]]:
    """Per input, per ``"<group> v<version>"``: its value in each round with the band it was judged
    by (``at``, ``value``, ``lower``, ``upper``, ``alert``, ``reference``), from ``/v1/drift``'s history."""
    out: dict[str, dict[str, list[Point]]] = {}
    for row in history:
        key = f"{row['group']} v{row['version']}"
        for f in row.get("features", []):
            if f["kind"] != "feature":
                continue
            out.setdefault(f["feature"], {}).setdefault(key, []).append(
                {
                    "at": datetime.fromisoformat(row["at"]),
                    "value": float(f["value"]),
                    "lower": f["lower"],
                    "upper": float(f["upper"]),
                    "alert": bool(f["alert"]),
                    "reference": row.get("reference", "version"),
                }
            )
    return out


def back_to_baseline(history: list[dict[str, Any]], group: str) -> list[str]:
    """Per input that alerted in ``group``: its peak under the version that alerted, and where its
    value is in the last round under the newest version (in band: back to baseline)."""
    lines = drift_lines(history)
    found = []
    for feature, series in sorted(lines.items()):
        mine = {k: v for k, v in series.items() if k.startswith(f"{group} v")}
        alerted = [(k, p) for k, points in mine.items() for p in points if p["alert"]]
        if not alerted:
            continue
        first, peak = max(alerted, key=lambda kp: kp[1]["value"] / kp[1]["upper"])
        newest = max(mine, key=lambda k: int(k.rsplit(" v", 1)[1]))
        last = mine[newest][-1]
        where = "still drifted" if last["alert"] else "back in band"
        against = f"{group}'s own reference" if last["reference"] == "group" else "the version's reference"
        side = "over" if last["alert"] else "within"
        found.append(
            f"{feature} in {group}: {peak['value']:.3f} over its band {peak['upper']:.3f} on "
            f"{first.split()[1]}; {last['value']:.3f} {side} {last['upper']:.3f} on "
            f"{newest.split()[1]} ({against}): {where}"
        )
    return found


def drift_section(history: list[dict[str, Any]], group: str | None) -> str:
    """The drift section: per input, value and band per group and version; the drifted group's summary."""
    lines = drift_lines(history)
    if not lines:
        return ""
    alerted = sorted(f for f, series in lines.items() if any(p["alert"] for s in series.values() for p in s))
    shown = (alerted or sorted(lines))[:4]
    figure, _ = _figure(7.5, 2.4 * len(shown))
    figure.clear()
    for i, feature in enumerate(shown):
        ax = figure.add_subplot(len(shown), 1, i + 1)
        for key, points in sorted(lines[feature].items()):
            times = [p["at"] for p in points]
            (line,) = ax.plot(times, [p["value"] for p in points], marker=".", label=key)
            ax.plot(
                times, [p["upper"] for p in points], linestyle="--", color=line.get_color(), linewidth=0.8
            )
            lower = [p["lower"] or 0.0 for p in points]
            ax.fill_between(times, lower, [p["upper"] for p in points], color=line.get_color(), alpha=0.08)
            flagged = [p for p in points if p["alert"]]
            ax.plot([p["at"] for p in flagged], [p["value"] for p in flagged], "x", color="#c44e52")
        ax.set_ylabel(feature)
        ax.legend(fontsize=7, ncol=3)
    figure.axes[0].set_title("Drift per input: value (solid), band (dashed, shaded), alerts (x)")
    figure.autofmt_xdate()
    image = _png(figure)
    _close(figure)
    table = _drift_table(history)
    summary = "".join(
        f"<li>{html.escape(s)}</li>" for s in (back_to_baseline(history, group) if group else [])
    )
    return (
        f'<h2>Drift over time</h2><img src="data:image/png;base64,{image}">'
        + (f'<ul id="baseline">{summary}</ul>' if summary else "")
        + table
    )


def _drift_table(history: list[dict[str, Any]]) -> str:
    """The last round: per group, version and input, the value and the band it was judged by."""
    if not history:
        return ""
    last = history[-1]["at"]
    rows = "".join(
        f"<tr><td>{html.escape(str(r['group']))}</td><td>v{r['version']}</td>"
        f"<td>{html.escape(r.get('reference', 'version'))}</td><td>{html.escape(f['feature'])}</td>"
        f"<td>{html.escape(f['method'])}</td><td>{f['value']:.4f}</td>"
        f"<td>{f['lower'] or 0:.4f} – {f['upper']:.4f}</td><td>{'ALERT' if f['alert'] else 'ok'}</td></tr>"
        for r in history
        if r["at"] == last
        for f in r.get("features", [])
        if f["kind"] == "feature"
    )
    return (
        '<table id="drift-latest"><thead><tr><th>group</th><th>version</th><th>reference</th>'
        "<th>input</th><th>method</th><th>value</th><th>band</th><th>alert</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _accuracy(history: list[dict[str, Any]]) -> str:
    estimated, realized = _series(history, "estimated_accuracy"), _series(history, "realized_accuracy")
    if not estimated and not realized:
        return ""
    figure, axes = _figure()
    for key, (times, values) in sorted(estimated.items()):
        axes.plot(times, values, linestyle="--", label=f"{key} estimated")
    for key, (times, values) in sorted(realized.items()):
        axes.plot(times, values, marker="o", markersize=3, label=f"{key} realized")
    axes.set_ylim(0, 1.02)
    axes.set_ylabel("accuracy")
    axes.set_title("Estimated (no labels, CBPE) vs realized (feedback) accuracy")
    axes.legend(fontsize=7, ncol=2)
    figure.autofmt_xdate()
    image = _png(figure)
    _close(figure)
    return f'<h2>Estimated vs realized accuracy</h2><img src="data:image/png;base64,{image}">'


def _timeline(result: DemoResult) -> str:
    if result.fleet is None or not result.fleet.timeline:
        return ""
    events = result.fleet.timeline
    figure, axes = _figure(7.5, 0.45 * len(events) + 0.8)
    for i, (at, text) in enumerate(events):
        axes.plot([at], [len(events) - i], "o", color="#4c72b0")
        axes.text(at, len(events) - i, f"  {text[:90]}", va="center", fontsize=8)
    axes.set_yticks([])
    axes.set_xlabel("seconds since the fleet started")
    axes.set_xlim(-5, max(at for at, _ in events) * 1.9 + 10)
    axes.set_title("Rollout timeline")
    image = _png(figure)
    _close(figure)
    return f'<h2>Rollout timeline</h2><img src="data:image/png;base64,{image}">'


def _versions(settings_home: Path, model: str) -> dict[int, dict[str, float]]:
    """Holdout metrics per registered version (MLflow registry tags)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{(settings_home / 'mlflow.db').resolve()}")
    out = {}
    for version in mlflow.MlflowClient().search_model_versions(f"name='{model}'"):
        out[int(version.version)] = {
            k.removeprefix("holdout_"): float(v) for k, v in version.tags.items() if k.startswith("holdout_")
        }
    return out


def _champion(result: DemoResult, model: str) -> str:
    """The last champion comparison: the labelled rows training used, both sides' metrics, the gates."""
    if not result.store_url:
        return ""
    from edgeml.store import open_store
    from edgeml.train.registry import last_comparison

    found = last_comparison(open_store(result.store_url), model)
    if found is None:
        return ""
    esc = html.escape
    champion = f"champion v{found.champion}" if found.champion else "no champion yet"
    rows = "".join(
        f"<tr><td>{esc(e['name'])}</td><td>{e['rows']:,}</td>"
        f"<td>{e['challenger'].get(found.metric, float('nan')):.4f}</td>"
        f"<td>{e['champion'].get(found.metric, float('nan')):.4f}</td></tr>"
        for e in found.evidence
    )
    table = (
        f"<table><tr><th>rows</th><th>count</th><th>v{esc(found.challenger)} {esc(found.metric)}</th>"
        f"<th>{esc(champion)}</th></tr>{rows}</table>"
        if rows
        else ""
    )
    used = found.labelled
    labelled = (
        f"<p>Training used {used['rows']:,} labelled rows from the field (dataset "
        f"{esc(model)}.labels, snapshot {esc(str(used['snapshot']))}): {used['trained']:,} trained on, "
        f"each counted {used['weight']}×, {used['held_out']:,} held out for the comparison.</p>"
        if used
        else "<p>No labelled rows from the field were landed before this training.</p>"
    )
    gates = "".join(
        f"<li>{'✓' if g['passed'] else '✗'} {esc(g['name'])}: {esc(g['detail'])}</li>" for g in found.gates
    )
    return (
        f"<h2>Champion comparison: v{esc(found.challenger)} vs {esc(champion)}</h2>{labelled}{table}"
        f"<ul>{gates}</ul><p>{esc(found.outcome)}</p>"
    )


def write_report(result: DemoResult, home: Path) -> Path:
    """Write ``$EDGEML_HOME/report/index.html``; its path."""
    model = result.training.model if result.training else "pump-faults"
    history = _history(result)
    from edgeml.demo.common import DRIFTED_GROUP

    drifted_group = DRIFTED_GROUP if result.fleet is not None else None
    sections = [
        _data_quality(result),
        _training(result, _versions(home, model)),
        _champion(result, model),
        drift_section(history, drifted_group),
        _accuracy(history),
        _timeline(result),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgeml demo report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "img{max-width:100%}h2{border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:.85em}"
        "td,th{padding:.15em .5em;border-bottom:1px solid #eee;text-align:left}</style></head><body>"
        f"<h1>edgeml demo: {html.escape(model)}</h1>{''.join(sections)}</body></html>"
    )
    path = home / "report" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
