"""Quality gates: metric thresholds, and the challenger against the champion on the same evidence.

The champion comparison scores both models on the snapshot's holdout and, when the field has
labelled rows held out (:mod:`edgeml.train.feedback`), on those too: the challenger passes
each when its metric is at least the champion's + ``champion_margin`` - ``champion_tolerance``
(for a metric to minimise: at most the champion's - margin + tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeml.spec.models import Gates

__all__ = ["FIELD_MIN_ROWS", "Evidence", "GateResult", "Verdict", "judge"]

#: field-labelled holdout rows needed before the comparison on them counts
FIELD_MIN_ROWS = 10


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Evidence:
    """One side-by-side score: the challenger's and the champion's metrics on the same rows."""

    name: str  # "holdout" or "field labels"
    rows: int
    challenger: dict[str, float]
    champion: dict[str, float]


@dataclass
class Verdict:
    results: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]


def _thresholds(gates: Gates, metrics: dict[str, float]) -> list[GateResult]:
    results = []
    for name, bound in gates.thresholds.items():
        value = metrics.get(name)
        if value is None:
            results.append(GateResult(f"{name} threshold", False, f"{name} was not measured"))
        elif bound.min is not None and value < bound.min:
            detail = f"{name} {value:.4f} is below {bound.min:g} by {bound.min - value:.4f}"
            results.append(GateResult(f"{name} ≥ {bound.min:g}", False, detail))
        elif bound.max is not None and value > bound.max:
            detail = f"{name} {value:.4f} is above {bound.max:g} by {value - bound.max:.4f}"
            results.append(GateResult(f"{name} ≤ {bound.max:g}", False, detail))
        else:
            results.append(GateResult(f"{name} threshold", True, f"{name} {value:.4f} within bounds"))
    return results


def _against(gates: Gates, metric: str, mode: str, version: str, evidence: Evidence) -> GateResult:
    name = "beats champion" if evidence.name == "holdout" else f"beats champion on {evidence.name}"
    mine, best = evidence.challenger.get(metric), evidence.champion.get(metric)
    if mine is None or best is None:
        return GateResult(name, False, f"{metric} missing for the comparison")
    slack = gates.champion_margin - gates.champion_tolerance
    need = best + slack if mode == "max" else best - slack
    rounding = 1e-9 * max(1.0, abs(need))  # 0.85 vs 0.8 + 0.05 must pass despite rounding
    ok = mine >= need - rounding if mode == "max" else mine <= need + rounding
    terms = f"margin {gates.champion_margin:g}, tolerance {gates.champion_tolerance:g}"
    rows = f" on {evidence.rows:,} {evidence.name} rows" if evidence.rows else ""
    detail = f"{metric} {mine:.4f} vs champion v{version} {best:.4f}{rows} ({terms})"
    return GateResult(name, ok, detail + ("" if ok else f": short by {abs(need - mine):.4f}"))


def judge(
    gates: Gates,
    metric: str,
    mode: str,
    metrics: dict[str, float],
    champion: tuple[str, dict[str, float]] | None,
    *,
    holdout_rows: int = 0,
    evidence: list[Evidence] | None = None,
) -> Verdict:
    """Check every gate (none stops early). ``champion`` is (version, its holdout metrics).

    ``evidence`` adds comparisons on other rows both were scored on (the field's labelled
    holdout); those with fewer than :data:`FIELD_MIN_ROWS` rows are left out.
    """
    verdict = Verdict(_thresholds(gates, metrics))
    if champion is not None:
        version, theirs = champion
        verdict.results.append(
            _against(gates, metric, mode, version, Evidence("holdout", holdout_rows, metrics, theirs))
        )
        for more in evidence or []:
            if more.rows >= FIELD_MIN_ROWS:
                verdict.results.append(_against(gates, metric, mode, version, more))
    return verdict
