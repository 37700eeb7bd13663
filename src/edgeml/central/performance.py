"""Model performance on the fleet: estimated without labels, and realized from feedback.

:func:`estimate_accuracy` is the confusion-matrix estimate confidence-based performance
estimation (CBPE) makes, computed from the telemetry's calibrated-probability sums alone:
with calibrated probabilities, the chance that a row's prediction is right is the calibrated
probability of the predicted class, so the expected accuracy of a window is
Σ max calibrated probability / rows (``expected_correct / rows``). Per class, the sums
give the expected number of rows truly of that class. For two classes that pins down the
whole expected confusion matrix (see :func:`_binary_classes`), hence expected precision and
recall; for more classes it does not, and only the expected class shares are reported.

Where row samples are allowed (compliance ``none``), :func:`nannyml_analysis` runs NannyML's
``UnivariateDriftCalculator`` and ``CBPE`` (classification) or ``DLE`` (regression) on the
pooled sample against reference rows the caller supplies (the model version's holdout
rows, published next to the signed manifest: :class:`StoredReferenceRows`).
:func:`realized_accuracy` scores (prediction, label) pairs from feedback.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from edgeml._thirdparty import import_nannyml
from edgeml.bundle.keys import KeyRing
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.reference_rows import (
    PREDICTION_COLUMN,
    TARGET_COLUMN,
    probability_column,
    reference_rows_key,
)
from edgeml.errors import EdgemlError, NoReferenceRows
from edgeml.observability import track_accuracy, track_nannyml_drift, track_nannyml_performance
from edgeml.telemetry.schema import PooledWindow, SampleRow

if TYPE_CHECKING:
    import pandas as pd

    from edgeml.store.base import ObjectStore

__all__ = [
    "PREDICTION_COLUMN",
    "TARGET_COLUMN",
    "AccuracyEstimate",
    "ClassEstimate",
    "NannyDrift",
    "NannyEstimate",
    "NannyMLReport",
    "RealizedAccuracy",
    "StoredReferenceRows",
    "estimate_accuracy",
    "nannyml_analysis",
    "probability_column",
    "publish_accuracy",
    "publish_nannyml",
    "realized_accuracy",
    "reference_rows_key",
    "sample_frame",
]

#: default accuracy drop below the holdout accuracy that raises the alarm
DEFAULT_TOLERANCE = 0.02


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class ClassEstimate(_Result):
    """Expected figures for one class; precision and recall only where the sums determine them."""

    label: str
    predicted: int
    expected_actual: float
    expected_precision: float | None = None
    expected_recall: float | None = None


class AccuracyEstimate(_Result):
    """Label-free accuracy of one window, next to the holdout accuracy of the model version."""

    model: str
    version: int
    group: str | None
    rows: int
    estimated: float
    reference: float | None
    tolerance: float
    drop: float | None
    alarm: bool
    classes: list[ClassEstimate]


def _binary_classes(
    labels: list[str], predicted: dict[str, int], actual: list[float], correct: float
) -> list[ClassEstimate]:
    """Expected precision and recall of both classes from (predicted counts, class sums, correct).

    With a, b the classes: correct = TP_a + TP_b, predicted_b = TP_b + FN_a and actual_a =
    TP_a + FN_a, so TP_a = (correct − predicted_b + actual_a) / 2. The isotonic maps of the
    two classes are fitted apart, so their sums are scaled to add up to the rows first.
    """
    rows = sum(predicted.get(lb, 0) for lb in labels)
    scale = rows / sum(actual) if sum(actual) > 0 else 0.0
    actual = [a * scale for a in actual]
    out = []
    for k, label in enumerate(labels):
        n_pred, n_other = predicted.get(label, 0), predicted.get(labels[1 - k], 0)
        tp = min(max((correct - n_other + actual[k]) / 2, 0.0), float(n_pred), actual[k])
        out.append(
            ClassEstimate(
                label=label,
                predicted=n_pred,
                expected_actual=actual[k],
                expected_precision=tp / n_pred if n_pred else None,
                expected_recall=tp / actual[k] if actual[k] > 0 else None,
            )
        )
    return out


def estimate_accuracy(
    window: PooledWindow,
    manifest: Manifest,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_rows: int = 30,
) -> AccuracyEstimate | None:
    """Expected accuracy of a window from its calibrated sums; None without sums or rows.

    The alarm is raised when the estimate is more than ``tolerance`` below the manifest's
    ``holdout_accuracy`` and the window has at least ``min_rows`` rows.
    """
    sums = window.calibration
    if sums is None or sums.rows == 0:
        return None
    estimated = sums.expected_correct / sums.rows
    labels = list(manifest.outputs.labels or sorted(sums.sums))
    actual = [sums.sums.get(lb, 0.0) for lb in labels]
    if len(labels) == 2:
        classes = _binary_classes(labels, window.predictions, actual, sums.expected_correct)
    else:
        classes = [
            ClassEstimate(label=lb, predicted=window.predictions.get(lb, 0), expected_actual=a)
            for lb, a in zip(labels, actual, strict=True)
        ]
    reference = manifest.metrics.get("holdout_accuracy")
    drop = None if reference is None else reference - estimated
    return AccuracyEstimate(
        model=window.model,
        version=window.version,
        group=window.group,
        rows=sums.rows,
        estimated=estimated,
        reference=reference,
        tolerance=tolerance,
        drop=drop,
        alarm=drop is not None and drop > tolerance and sums.rows >= min_rows,
        classes=classes,
    )


class RealizedAccuracy(_Result):
    rows: int
    correct: int
    accuracy: float


def _same(prediction: Any, label: Any) -> bool:
    """Equal as labels: the same text, or the same number however written ("1" and 1.0)."""
    if str(prediction) == str(label):
        return True
    try:
        return float(prediction) == float(label)
    except (TypeError, ValueError):
        return False


def realized_accuracy(pairs: Iterable[tuple[Any, Any]]) -> RealizedAccuracy | None:
    """Accuracy of (prediction, label) pairs from feedback; None without pairs."""
    rows = correct = 0
    for prediction, label in pairs:
        rows += 1
        correct += _same(prediction, label)
    return RealizedAccuracy(rows=rows, correct=correct, accuracy=correct / rows) if rows else None


def publish_accuracy(
    model: str,
    version: int,
    group: str | None,
    *,
    estimate: AccuracyEstimate | None = None,
    realized: RealizedAccuracy | None = None,
) -> None:
    """Set ESTIMATED_ACCURACY and REALIZED_ACCURACY for what is given."""
    track_accuracy(
        model,
        version,
        group,
        estimated=None if estimate is None else estimate.estimated,
        realized=None if realized is None else realized.accuracy,
    )


# --- NannyML on row samples ----------------------------------------------------------------


class NannyDrift(_Result):
    """NannyML's univariate drift of one feature on the sample."""

    feature: str
    method: str
    value: float
    threshold: float | None
    alert: bool


class NannyEstimate(_Result):
    """NannyML's estimate of a metric on the sample, with its confidence band."""

    estimator: str
    metric: str
    value: float
    lower: float | None
    upper: float | None
    alert: bool


class NannyMLReport(_Result):
    rows: int
    drift: list[NannyDrift]
    performance: NannyEstimate | None
    skipped: str | None = None  # why the performance estimate is missing


def sample_frame(rows: Sequence[SampleRow]) -> pd.DataFrame:
    """Sampled rows as a frame: one column per sampled input, ``prediction``, and the
    ``probability:<label>`` columns when every row carries its probabilities (CBPE needs them all)."""
    import pandas as pd

    with_probabilities = bool(rows) and all(row.probabilities for row in rows)
    return pd.DataFrame(
        [
            {
                **row.inputs,
                PREDICTION_COLUMN: row.prediction,
                **(
                    {probability_column(lb): p for lb, p in (row.probabilities or {}).items()}
                    if with_probabilities
                    else {}
                ),
            }
            for row in rows
        ]
    )


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def nannyml_analysis(reference: pd.DataFrame, analysis: pd.DataFrame, manifest: Manifest) -> NannyMLReport:
    """NannyML drift and performance estimate of ``analysis`` (one chunk) against ``reference``.

    ``reference`` (the model version's holdout rows) has one column per numeric or categorical
    input, ``prediction`` (the predicted label as in ``outputs.labels``, or the predicted
    value), ``target`` (the true label or value) and, for classifiers,
    ``probability:<label>`` per class (the model's own probabilities; CBPE calibrates them).
    ``analysis`` has the same columns but ``target``: :func:`sample_frame` gives it, with the
    probabilities when the sampled rows carry them; without them CBPE is skipped (the reason is
    in the report). The reference is chunked in pieces of the analysis's size, so it needs at
    least twice as many rows.
    """
    if manifest.compliance != "none":
        raise ValueError(f"{manifest.model} runs under compliance {manifest.compliance!r}: no row samples")
    rows = len(analysis)
    if rows == 0 or len(reference) < 2 * rows:
        raise ValueError(
            f"need a non-empty sample and at least twice its rows of reference ({len(reference)})"
        )
    labels = manifest.outputs.labels
    needed = {PREDICTION_COLUMN, TARGET_COLUMN} | {probability_column(lb) for lb in labels or []}
    lacking = sorted(needed - set(reference.columns))
    if lacking:
        raise ValueError(f"the reference frame lacks the columns {', '.join(lacking)}")
    inputs = [
        f
        for f in manifest.inputs
        if not f.pii and f.kind in ("numeric", "categorical") and f.name in reference and f.name in analysis
    ]
    categorical = [f.name for f in inputs if f.kind == "categorical"]
    features = [f.name for f in inputs]
    ref = _typed(reference, inputs)
    cur = _typed(analysis, inputs)

    nml = import_nannyml()
    drift: list[NannyDrift] = []
    if features:
        calc = nml.UnivariateDriftCalculator(
            column_names=features,
            treat_as_categorical=categorical,
            chunk_size=rows,
            continuous_methods=["jensen_shannon"],
            categorical_methods=["chi2"],
        )
        calc.fit(ref)
        table = calc.calculate(cur).filter(period="analysis").to_df()
        for name in features:
            method = "chi2" if name in categorical else "jensen_shannon"
            drift.append(
                NannyDrift(
                    feature=name,
                    method=method,
                    value=float(table[(name, method, "value")].iloc[-1]),
                    threshold=_num(table[(name, method, "upper_threshold")].iloc[-1]),
                    alert=bool(table[(name, method, "alert")].iloc[-1]),
                )
            )
    performance, skipped = _estimate(nml, ref, cur, manifest, features, categorical, rows)
    return NannyMLReport(rows=rows, drift=drift, performance=performance, skipped=skipped)


def _typed(frame: pd.DataFrame, inputs: list[Any]) -> pd.DataFrame:
    """Inputs as NannyML reads them alike on both sides: numbers as floats, categories as text."""
    import pandas as pd

    out = frame.copy()
    for f in inputs:
        if f.kind == "numeric":
            out[f.name] = pd.to_numeric(out[f.name], errors="coerce").astype("float64")
        else:
            out[f.name] = out[f.name].map(lambda v: None if v is None else str(v)).astype("object")
    return out


def _estimate(
    nml: Any,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    manifest: Manifest,
    features: list[str],
    categorical: list[str],
    rows: int,
) -> tuple[NannyEstimate | None, str | None]:
    labels = manifest.outputs.labels
    if labels:
        columns = [probability_column(lb) for lb in labels]
        if not set(columns) <= set(cur.columns):
            return None, "the sample carries no class probabilities: CBPE needs them"
        if len(labels) == 2:
            positive = labels[1]
            ref, cur = (
                f.assign(
                    **{
                        PREDICTION_COLUMN: (f[PREDICTION_COLUMN].astype(str) == positive).astype(int),
                        **(
                            {TARGET_COLUMN: (f[TARGET_COLUMN].astype(str) == positive).astype(int)}
                            if TARGET_COLUMN in f
                            else {}
                        ),
                    }
                )
                for f in (ref, cur)
            )
            estimator = nml.CBPE(
                y_pred_proba=probability_column(positive),
                y_pred=PREDICTION_COLUMN,
                y_true=TARGET_COLUMN,
                problem_type="classification_binary",
                metrics=["accuracy"],
                chunk_size=rows,
            )
        else:
            ref, cur = (
                f.assign(**{c: f[c].astype(str) for c in (PREDICTION_COLUMN, TARGET_COLUMN) if c in f})
                for f in (ref, cur)
            )
            estimator = nml.CBPE(
                y_pred_proba={lb: probability_column(lb) for lb in labels},
                y_pred=PREDICTION_COLUMN,
                y_true=TARGET_COLUMN,
                problem_type="classification_multiclass",
                metrics=["accuracy"],
                chunk_size=rows,
            )
        name, metric = "CBPE", "accuracy"
    elif manifest.outputs.task == "regression":
        if not features:
            return None, "DLE needs numeric or categorical inputs"
        # NannyML 0.13's DLE encodes text categories in a way pandas 3 refuses (it reshapes an
        # Arrow string array), so categories go in as codes of the reference's sorted values;
        # an unseen or missing one is NaN, which LightGBM treats as missing
        codes = {
            c: {v: float(i) for i, v in enumerate(sorted(ref[c].dropna().unique()))} for c in categorical
        }
        ref, cur = (
            f.assign(**{c: f[c].map(codes[c]).astype("float64") for c in categorical}) for f in (ref, cur)
        )
        estimator = nml.DLE(
            feature_column_names=features,
            y_pred=PREDICTION_COLUMN,
            y_true=TARGET_COLUMN,
            metrics=["mae"],
            chunk_size=rows,
            hyperparameters={"verbosity": -1},  # LightGBM prints to stdout otherwise
        )
        name, metric = "DLE", "mae"
    else:
        return None, f"no NannyML estimator for task {manifest.outputs.task!r}"
    estimator.fit(ref)
    table = estimator.estimate(cur).filter(period="analysis").to_df()
    return (
        NannyEstimate(
            estimator=name,
            metric=metric,
            value=float(table[(metric, "value")].iloc[-1]),
            lower=_num(table[(metric, "lower_confidence_boundary")].iloc[-1]),
            upper=_num(table[(metric, "upper_confidence_boundary")].iloc[-1]),
            alert=bool(table[(metric, "alert")].iloc[-1]),
        ),
        None,
    )


def publish_nannyml(model: str, version: int, group: str | None, report: NannyMLReport) -> None:
    """Set the NannyML gauges: drift alert per feature, the estimate's alert, CBPE's accuracy band."""
    for d in report.drift:
        track_nannyml_drift(model, version, group, d.feature, d.alert)
    p = report.performance
    if p is None:
        return
    bounds = {"estimate": p.value, "lower": p.lower, "upper": p.upper} if p.metric == "accuracy" else {}
    track_nannyml_performance(model, version, group, p.estimator, p.metric, p.alert, bounds)


# --- reference rows for NannyML ------------------------------------------------------------


class StoredReferenceRows:
    """A version's reference rows (the frame :func:`nannyml_analysis` documents), from the object store.

    They are Parquet at :func:`reference_rows_key`, with a detached signature by a key of the
    ring in ``keyring``: rows that fail it are refused, because they would decide what counts as
    drift. A bundle does not have to carry them (devices never fetch them); a version without
    them is simply not analysed by NannyML. Frames found are kept (the ``keep`` most recent);
    a miss is asked again next time, so rows published later are picked up.
    """

    def __init__(self, store: ObjectStore | None, keyring: Path | None, keep: int = 8) -> None:
        self.store = store
        self.keyring = keyring
        self.keep = keep
        self._found: OrderedDict[str, pd.DataFrame] = OrderedDict()

    def __call__(self, manifest: Manifest) -> pd.DataFrame:
        import pandas as pd

        key = reference_rows_key(manifest.model, manifest.version, manifest.profile)
        if key in self._found:
            self._found.move_to_end(key)
            return self._found[key]
        if self.store is None or self.keyring is None:
            raise NoReferenceRows(
                "the central node has no object store and key ring to read reference rows from"
            )
        try:
            if not self.store.exists(key):
                raise NoReferenceRows(f"no reference rows published at {key}")
            data = self.store.get(key)
            KeyRing.from_dir(self.keyring).verify(data, self.store.get(key + ".sig"))
        except NoReferenceRows:
            raise
        except EdgemlError as exc:  # the store's or the signature's
            raise NoReferenceRows(f"reference rows {key} refused: {exc.message}") from exc
        frame = pd.read_parquet(io.BytesIO(data))
        self._found[key] = frame
        while len(self._found) > self.keep:
            self._found.popitem(last=False)
        return frame
