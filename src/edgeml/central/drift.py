"""Drift: pooled device telemetry against the manifest's reference statistics.

Telemetry batches are pooled per (model, version, device group, window) by summing their
counts (:func:`pool`); then every input, every score histogram and the predicted-label
distribution is compared with the reference the bundle carries (:func:`compute_drift`).

An input with a band in the manifest (``reference.drift``, signed by ``bundle build`` since
issue #22) is judged by :mod:`edgeml.drift`, the code ``edgeml drift run`` backtests with:
NannyML's method and a band from the reference's own chunks. A group the version was trained
for (``reference.groups``) has its inputs judged by that group's own counts and bands instead.
What follows describes the bootstrap, which judges the rest (older manifests, score
histograms, predicted labels).

Distances, on count vectors turned into proportions:

- ``js``: Jensen–Shannon *distance* with base-2 logarithms (the square root of the
  divergence, as scipy and NannyML report it), in [0, 1];
- ``psi``: population stability index, Σ (q − p) ln(q / p); an empty bin would make it
  infinite, so proportions are floored at :data:`PSI_EPSILON` (1e-4, the usual choice:
  a bin empty on one side then adds about (q − p) · ln(q / 1e-4), large but finite);
- ``hellinger``: √(1 − Σ √(p q)) = ‖√p − √q‖ / √2, in [0, 1] (numeric histograms);
- ``chi2``: the chi-squared statistic of the 2 × k table (reference counts, current counts),
  with its asymptotic p-value for the record (categories and predicted labels).

All four are symmetric and zero exactly when the two proportions agree.

Thresholds come from the reference data's own variability rather than fixed numbers: under
"no drift" the reference and the window are two samples of the same distribution, so we
draw :attr:`DriftConfig.draws` pairs (a reference-sized and a window-sized multinomial
sample from the reference proportions), compute each distance for every pair, and take the
:attr:`DriftConfig.quantile` (99th percentile by default) as the threshold. A small window
varies more, so it needs a larger distance to alarm; a large one alarms on smaller shifts.
Thresholds are memoised per reference and window size; window sizes are rounded *down* to a
grid of ratio 2^(1/4), which gives a slightly higher (more cautious) threshold and lets
windows of similar size share one bootstrap. Draws are seeded, so results are reproducible.

Missing values are one more bin (a rising missing rate is drift); text inputs are the
exception, because the reference counts a missing text as length 0 there. Out-of-range
counts are reported, not tested. One method decides a feature's breach
(:attr:`DriftConfig.numeric_method`, :attr:`DriftConfig.categorical_method`); the others
are reported with their own thresholds.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeml.bundle.manifest import CategoryCounts, DriftThresholds, Histogram, Manifest
from edgeml.drift.judge import band_for, judge
from edgeml.observability import track_drift, track_drift_band
from edgeml.telemetry.schema import CalibratedSums, FeatureTelemetry, PooledWindow, TelemetryBatch

if TYPE_CHECKING:
    from edgeml.telemetry.store import TelemetryStore

__all__ = [
    "DISTANCES",
    "PSI_EPSILON",
    "DriftConfig",
    "DriftReport",
    "FeatureDrift",
    "Method",
    "MethodScore",
    "ThresholdCache",
    "chi2_statistic",
    "compute_drift",
    "hellinger",
    "js_distance",
    "pool",
    "pool_stored",
    "pool_window",
    "psi",
    "publish_drift",
]

Method = Literal["js", "psi", "hellinger", "chi2", "wasserstein"]
Kind = Literal["feature", "score", "prediction"]

#: floor for proportions in PSI, so an empty bin gives a large but finite term
PSI_EPSILON = 1e-4
#: label the predicted-label distribution goes by in results and metrics
PREDICTIONS = "predicted_label"
#: score histograms go by this prefix plus their key (``score:probability:yes``)
SCORE_PREFIX = "score:"


def _proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    return counts / np.where(total > 0, total, 1.0)


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance (base 2) between count vectors along the last axis."""
    p, q = _proportions(p), _proportions(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        # 0 · log 0 = 0; where a > 0, m > 0 too
        ratio = np.where(a > 0, a / np.where(m > 0, m, 1.0), 1.0)
        return np.asarray(np.sum(a * np.log2(ratio), axis=-1))

    divergence = np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0)  # rounding can step a hair outside
    return np.asarray(np.sqrt(divergence))


def psi(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Population stability index between count vectors, proportions floored at PSI_EPSILON."""
    p = np.maximum(_proportions(p), PSI_EPSILON)
    q = np.maximum(_proportions(q), PSI_EPSILON)
    return np.asarray(np.sum((q - p) * np.log(q / p), axis=-1))


def hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hellinger distance between count vectors, in [0, 1]."""
    # ‖√p − √q‖ / √2 rather than √(1 − Σ√(pq)): exactly 0 for equal proportions, no cancellation
    p, q = _proportions(p), _proportions(q)
    return np.asarray(np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=-1) / 2))


def chi2_statistic(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Chi-squared statistic of the 2 × k table (p; q); bins empty on both sides add nothing."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    rows_p = p.sum(axis=-1, keepdims=True)
    rows_q = q.sum(axis=-1, keepdims=True)
    total = rows_p + rows_q
    column = p + q
    share = column / np.where(total > 0, total, 1.0)
    stat = np.zeros(np.broadcast_shapes(p.shape, q.shape))
    for observed, rows in ((p, rows_p), (q, rows_q)):
        expected = rows * share
        stat = stat + np.where(
            expected > 0, (observed - expected) ** 2 / np.where(expected > 0, expected, 1), 0
        )
    return np.asarray(np.sum(stat, axis=-1))


DISTANCES: dict[Method, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "js": js_distance,
    "psi": psi,
    "hellinger": hellinger,
    "chi2": chi2_statistic,
}


def _chi2_p_value(reference: np.ndarray, current: np.ndarray, statistic: float) -> float:
    from scipy.stats import chi2

    dof = int(np.count_nonzero(reference + current)) - 1
    return float(chi2.sf(statistic, dof)) if dof > 0 else 1.0


@dataclass(frozen=True)
class DriftConfig:
    """How drift is measured and when it alarms."""

    quantile: float = 0.99  # of the no-drift distances: the threshold
    draws: int = 1000  # bootstrap pairs per (reference, window size)
    min_rows: int = 30  # fewer rows in a window: not tested
    numeric_methods: tuple[Method, ...] = ("js", "psi", "hellinger")
    categorical_methods: tuple[Method, ...] = ("chi2", "js", "psi")
    numeric_method: Method = "js"  # decides a numeric histogram's breach
    categorical_method: Method = "chi2"  # decides a category / predicted-label breach
    seed: int = 0
    # An optional effect-size floor, off by default: a breach also needs a Jensen-Shannon distance
    # of at least this much. Manifests with thresholds (edgeml.drift) take their band from reference
    # chunks, which already holds the rows' dependence; the floor is for what remains.
    min_js: float = 0.0


def _size_bucket(rows: int) -> int:
    """``rows`` rounded down to the grid 2^(k/4) (never below 1)."""
    if rows <= 8:
        return rows
    return max(1, math.floor(2 ** (math.floor(4 * math.log2(rows)) / 4)))


class ThresholdCache:
    """Bootstrap thresholds, memoised per (reference counts, window size bucket, methods)."""

    def __init__(self, config: DriftConfig | None = None, max_entries: int = 20_000) -> None:
        self.config = config or DriftConfig()
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[object, ...], dict[Method, float]] = OrderedDict()
        self._lock = threading.Lock()

    def thresholds(
        self, reference: Sequence[int] | np.ndarray, rows: int, methods: Sequence[Method]
    ) -> dict[Method, float]:
        """Per method, the configured quantile of its no-drift distance for a window of ``rows``."""
        ref = np.asarray(reference, dtype=np.int64)
        bucket = _size_bucket(rows)
        key = (ref.tobytes(), bucket, tuple(methods))
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        computed = self._bootstrap(ref, bucket, methods)
        with self._lock:
            self._entries[key] = computed
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return computed

    def _bootstrap(self, ref: np.ndarray, rows: int, methods: Sequence[Method]) -> dict[Method, float]:
        cfg = self.config
        # seeded by the question, so the same window gets the same threshold in every process
        digest = hashlib.sha256(ref.tobytes() + rows.to_bytes(8, "little")).digest()
        rng = np.random.default_rng([cfg.seed, int.from_bytes(digest[:8], "little")])
        share = ref / ref.sum()
        ref_draws = rng.multinomial(int(ref.sum()), share, size=cfg.draws)
        cur_draws = rng.multinomial(rows, share, size=cfg.draws)
        return {m: float(np.quantile(DISTANCES[m](ref_draws, cur_draws), cfg.quantile)) for m in methods}


def _add_counts(name: str, old: list[int], new: list[int]) -> list[int]:
    if not old:
        return list(new)
    if not new:
        return old
    if len(old) != len(new):
        raise ValueError(f"batches disagree on the bins of {name!r}: {len(old)} vs {len(new)} counts")
    return [a + b for a, b in zip(old, new, strict=True)]


def _add_feature(name: str, old: FeatureTelemetry | None, new: FeatureTelemetry) -> FeatureTelemetry:
    if old is None:
        return new
    if (old.edges, old.values) != (new.edges, new.values) and old.counts and new.counts:
        raise ValueError(f"batches disagree on the reference bins of {name!r}")
    return FeatureTelemetry(
        edges=old.edges if old.counts else new.edges,
        values=old.values if old.counts else new.values,
        counts=_add_counts(name, old.counts, new.counts),
        missing=old.missing + new.missing,
        out_of_range=old.out_of_range + new.out_of_range,
    )


def _add_histogram(name: str, old: Histogram | None, new: Histogram) -> Histogram:
    if old is None:
        return new
    if old.edges != new.edges:
        raise ValueError(f"batches disagree on the edges of score {name!r}")
    return Histogram(
        edges=old.edges, counts=_add_counts(name, old.counts, new.counts), missing=old.missing + new.missing
    )


def _add_calibration(old: CalibratedSums | None, new: CalibratedSums | None) -> CalibratedSums | None:
    if old is None or new is None:
        return old or new
    return CalibratedSums(
        sums={k: old.sums.get(k, 0.0) + new.sums.get(k, 0.0) for k in old.sums.keys() | new.sums.keys()},
        expected_correct=old.expected_correct + new.expected_correct,
        rows=old.rows + new.rows,
    )


def pool_window(batches: Iterable[TelemetryBatch]) -> PooledWindow:
    """Sum batches of one model version and group into one window (the batches' time span)."""
    pooled: PooledWindow | None = None
    for b in batches:
        if pooled is None:
            pooled = PooledWindow(b.model, b.version, b.group, b.window_start, b.window_end)
        elif (b.model, b.version, b.group) != (pooled.model, pooled.version, pooled.group):
            raise ValueError(
                f"cannot pool {b.model} v{b.version} group {b.group!r} with "
                f"{pooled.model} v{pooled.version} group {pooled.group!r}"
            )
        pooled.start = min(pooled.start, b.window_start)
        pooled.end = max(pooled.end, b.window_end)
        _accumulate(pooled, b)
    if pooled is None:
        raise ValueError("no batches to pool")
    return pooled


def _accumulate(pooled: PooledWindow, b: TelemetryBatch) -> None:
    pooled.batches += 1
    pooled.rows += b.rows
    for name, feature in b.features.items():
        pooled.features[name] = _add_feature(name, pooled.features.get(name), feature)
    for key, hist in b.scores.items():
        pooled.scores[key] = _add_histogram(key, pooled.scores.get(key), hist)
    for label, count in b.predictions.items():
        pooled.predictions[label] = pooled.predictions.get(label, 0) + count
    for kind, count in b.errors.items():
        pooled.errors[kind] = pooled.errors.get(kind, 0) + count
    pooled.calibration = _add_calibration(pooled.calibration, b.calibration)
    pooled.sample.extend(b.sample)


def pool(batches: Iterable[TelemetryBatch], window: timedelta) -> list[PooledWindow]:
    """Pool batches per (model, version, group, window), windows aligned on the Unix epoch.

    A batch belongs to the window its ``window_start`` falls in. Windows come out ordered
    by model, version, group and start; each one spans exactly its window.
    """
    step = window.total_seconds()
    if step <= 0:
        raise ValueError("the pooling window must be positive")
    found: dict[tuple[str, int, str, float], PooledWindow] = {}
    for b in batches:
        slot = math.floor(b.window_start.timestamp() / step) * step
        key = (b.model, b.version, b.group or "", slot)
        if key not in found:
            start = datetime.fromtimestamp(slot, UTC)
            found[key] = PooledWindow(b.model, b.version, b.group, start, start + window)
        _accumulate(found[key], b)
    return [found[k] for k in sorted(found)]


def pool_stored(
    store: TelemetryStore,
    window: timedelta | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    version: int | None = None,
    group: str | None = None,
    on_error: Callable[[tuple[str, int, str | None], Exception], None] | None = None,
) -> list[PooledWindow]:
    """The stored batches whose window ended in (``since``, ``until``], pooled.

    ``on_error`` (without ``window``): a (model, version, group) whose batches cannot be pooled
    (they disagree on their bins) is handed to it and left out, so it fails alone; without
    ``on_error`` the error is raised.

    With ``window``: :func:`pool` of them; None: :func:`pool_window` per model, version and group
    (ordered by model, version, then group, no group last). The database adds them up when it
    can (:meth:`~edgeml.telemetry.store.TelemetryStore.pooled_windows`: no payload is read, so a day
    of a large fleet takes seconds rather than minutes and gigabytes); the batches are read and
    pooled here when it cannot. Windows carry no row ``sample`` on the first path.
    """
    found = store.pooled_windows(window, since=since, until=until, model=model, version=version, group=group)
    if found is not None:
        return found
    batches = store.batches(model, version, group, since, until)
    if window is not None:
        return pool(batches, window)
    grouped: dict[tuple[str, int, str | None], list[TelemetryBatch]] = {}
    for b in batches:
        grouped.setdefault((b.model, b.version, b.group), []).append(b)
    order = sorted(grouped, key=lambda k: (k[0], k[1], k[2] is None, k[2] or ""))
    pooled: list[PooledWindow] = []
    for k in order:
        try:
            pooled.append(pool_window(grouped[k]))
        except ValueError as exc:
            if on_error is None:
                raise
            on_error(k, exc)
    return pooled


class MethodScore(BaseModel):
    """One distance between a window and its reference, with its threshold."""

    model_config = ConfigDict(frozen=True)

    method: Method
    value: float
    threshold: float
    breached: bool
    p_value: float | None = None


class FeatureDrift(BaseModel):
    """Drift of one input, score histogram or the predicted labels in one window.

    ``value``/``threshold``/``breached`` are the deciding ``method``'s; ``scores`` has every
    method. ``counts`` and ``reference_counts`` are the bins as compared: the reference's
    bins (categories then "other"), then missing where missing is a bin.
    """

    model_config = ConfigDict(frozen=True)

    feature: str
    kind: Kind
    method: Method
    value: float
    threshold: float
    breached: bool
    lower: float | None = None  # judged by the manifest's band (edgeml.drift): its lower bound
    rows: int
    reference_rows: int
    missing: int
    out_of_range: int
    counts: list[int]
    reference_counts: list[int]
    scores: list[MethodScore]


class DriftReport(BaseModel):
    """Drift of one pooled window against its model version's reference."""

    model_config = ConfigDict(frozen=True)

    model: str
    version: int
    group: str | None
    start: datetime
    end: datetime
    rows: int
    features: list[FeatureDrift]
    group_reference: bool = False  # inputs judged by the group's own reference (Reference.groups)

    @property
    def breaches(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.breached]


def _compare(
    name: str,
    kind: Kind,
    reference: list[int],
    current: list[int],
    methods: tuple[Method, ...],
    decider: Method,
    cache: ThresholdCache,
    missing: int = 0,
    out_of_range: int = 0,
) -> FeatureDrift | None:
    ref = np.asarray(reference, dtype=np.int64)
    cur = np.asarray(current, dtype=np.int64)
    rows = int(cur.sum())
    if rows < cache.config.min_rows or ref.sum() == 0 or len(ref) < 2:
        return None
    limits = cache.thresholds(ref, rows, methods)
    scores = []
    for m in methods:
        value = float(DISTANCES[m](ref, cur))
        scores.append(
            MethodScore(
                method=m,
                value=value,
                threshold=limits[m],
                breached=value > limits[m],
                p_value=_chi2_p_value(ref, cur, value) if m == "chi2" else None,
            )
        )
    decisive = next(s for s in scores if s.method == decider)
    js = float(DISTANCES["js"](ref, cur))
    breached = decisive.breached and js >= cache.config.min_js
    return FeatureDrift(
        feature=name,
        kind=kind,
        method=decider,
        value=decisive.value,
        threshold=decisive.threshold,
        breached=breached,
        rows=rows,
        reference_rows=int(ref.sum()),
        missing=missing,
        out_of_range=out_of_range,
        counts=cur.tolist(),
        reference_counts=ref.tolist(),
        scores=scores,
    )


def _judged(
    name: str,
    feature: FeatureTelemetry,
    expected: Histogram | CategoryCounts,
    thresholds: DriftThresholds,
    cfg: DriftConfig,
) -> FeatureDrift | None:
    """One input judged by the manifest's method and band (:func:`edgeml.drift.judge`)."""
    if len(feature.counts) != len(expected.counts):
        raise ValueError(
            f"telemetry of {name!r} has {len(feature.counts)} bins, the reference {len(expected.counts)}"
        )
    band = band_for(thresholds, name, sum(feature.counts))
    if band is None or sum(feature.counts) < cfg.min_rows:
        return None
    v = judge(
        name,
        band[0],
        expected,
        feature.counts,
        band[1],
        missing=feature.missing,
        min_js=cfg.min_js,
    )
    if v.value is None or v.upper is None:  # an empty chunk, or one category only: nothing to judge
        return None
    upper = v.upper
    return FeatureDrift(
        feature=name,
        kind="feature",
        method=v.method,
        value=v.value,
        threshold=upper,
        lower=v.lower,
        breached=v.alert,
        rows=v.rows,
        reference_rows=sum(expected.counts),
        missing=feature.missing,
        out_of_range=feature.out_of_range,
        counts=list(feature.counts),
        reference_counts=list(expected.counts),
        scores=[MethodScore(method=v.method, value=v.value, threshold=upper, breached=v.alert)],
    )


def compute_drift(
    window: PooledWindow,
    manifest: Manifest,
    *,
    cache: ThresholdCache | None = None,
) -> DriftReport:
    """Drift of every input, score histogram and the predicted labels of ``window``.

    Inputs without a reference, or with fewer than ``min_rows`` rows counted, are left out.
    Pass one long-lived :class:`ThresholdCache` to reuse thresholds across windows.
    """
    if (window.model, window.version) != (manifest.model, manifest.version):
        raise ValueError(
            f"window of {window.model} v{window.version} against the manifest of "
            f"{manifest.model} v{manifest.version}"
        )
    cache = cache or ThresholdCache()
    cfg = cache.config
    ref = manifest.reference
    # a version trained for this group: its inputs are judged by the group's own reference
    own = ref.groups.get(window.group) if window.group is not None else None
    inputs, bands = (own.features, own.drift) if own is not None else (ref.features, ref.drift)
    kinds = {f.name: f.kind for f in manifest.inputs}
    results: list[FeatureDrift | None] = []
    for name, feature in window.features.items():
        expected = inputs.get(name)
        if expected is None or not feature.counts:
            continue
        if bands is not None and band_for(bands, name, sum(feature.counts)) is not None:
            results.append(_judged(name, feature, expected, bands, cfg))
            continue
        categorical = isinstance(expected, CategoryCounts)
        with_missing = kinds.get(name) != "text"
        reference = [*expected.counts, expected.missing] if with_missing else list(expected.counts)
        current = [*feature.counts, feature.missing] if with_missing else list(feature.counts)
        if len(reference) != len(current):
            raise ValueError(f"telemetry of {name!r} has {len(current)} bins, the reference {len(reference)}")
        results.append(
            _compare(
                name,
                "feature",
                reference,
                current,
                cfg.categorical_methods if categorical else cfg.numeric_methods,
                cfg.categorical_method if categorical else cfg.numeric_method,
                cache,
                feature.missing,
                feature.out_of_range,
            )
        )
    for key, hist in window.scores.items():
        expected_hist = ref.scores.get(key)
        if expected_hist is None or expected_hist.edges != hist.edges:
            continue
        results.append(
            _compare(
                SCORE_PREFIX + key,
                "score",
                [*expected_hist.counts, expected_hist.missing],
                [*hist.counts, hist.missing],
                cfg.numeric_methods,
                cfg.numeric_method,
                cache,
                hist.missing,
            )
        )
    if ref.predictions and window.predictions:
        labels = list(manifest.outputs.labels or sorted(ref.predictions))
        known = set(labels)
        # a label the reference never predicted is one "other" bin
        reference = [ref.predictions.get(lb, 0) for lb in labels] + [
            sum(c for lb, c in ref.predictions.items() if lb not in known)
        ]
        current = [window.predictions.get(lb, 0) for lb in labels] + [
            sum(c for lb, c in window.predictions.items() if lb not in known)
        ]
        results.append(
            _compare(
                PREDICTIONS,
                "prediction",
                reference,
                current,
                cfg.categorical_methods,
                cfg.categorical_method,
                cache,
            )
        )
    return DriftReport(
        model=window.model,
        version=window.version,
        group=window.group,
        start=window.start,
        end=window.end,
        rows=window.rows,
        features=[r for r in results if r is not None],
        group_reference=own is not None,
    )


def publish_drift(report: DriftReport) -> None:
    """Set DRIFT_SCORE (every method), DRIFT_BREACH and DRIFT_THRESHOLD (the deciding method's band)
    from a report."""
    for f in report.features:
        scores: dict[str, float] = {s.method: s.value for s in f.scores}
        track_drift(report.model, report.version, report.group, f.feature, scores, f.breached)
        track_drift_band(
            report.model, report.version, report.group, f.feature, f.method, f.lower, f.threshold
        )
