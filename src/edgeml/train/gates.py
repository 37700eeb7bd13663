"""Quality gates: metric thresholds, and beating the current champion by a margin."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeml.spec.models import Gates

__all__ = ["GateResult", "Verdict", "judge"]


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str


@dataclass
class Verdict:
    results: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]


def judge(
    gates: Gates,
    metric: str,
    mode: str,
    metrics: dict[str, float],
    champion: tuple[str, dict[str, float]] | None,
) -> Verdict:
    """Check every gate (none stops early). ``champion`` is (version, its holdout metrics)."""
    verdict = Verdict()
    for name, bound in gates.thresholds.items():
        value = metrics.get(name)
        if value is None:
            verdict.results.append(GateResult(f"{name} threshold", False, f"{name} was not measured"))
            continue
        if bound.min is not None and value < bound.min:
            verdict.results.append(
                GateResult(
                    f"{name} ≥ {bound.min:g}",
                    False,
                    f"{name} {value:.4f} is below {bound.min:g} by {bound.min - value:.4f}",
                )
            )
        elif bound.max is not None and value > bound.max:
            verdict.results.append(
                GateResult(
                    f"{name} ≤ {bound.max:g}",
                    False,
                    f"{name} {value:.4f} is above {bound.max:g} by {value - bound.max:.4f}",
                )
            )
        else:
            verdict.results.append(GateResult(f"{name} threshold", True, f"{name} {value:.4f} within bounds"))
    if champion is not None:
        version, theirs = champion
        mine, best = metrics.get(metric), theirs.get(metric)
        margin = gates.champion_margin
        if mine is None or best is None:
            verdict.results.append(
                GateResult("beats champion", False, f"{metric} missing for the comparison")
            )
        else:
            need = best + margin if mode == "max" else best - margin
            slack = 1e-9 * max(1.0, abs(need))  # 0.85 vs 0.8 + 0.05 must pass despite rounding
            ok = mine >= need - slack if mode == "max" else mine <= need + slack
            shortfall = abs(need - mine)
            detail = f"{metric} {mine:.4f} vs champion v{version} {best:.4f} (margin {margin:g})" + (
                "" if ok else f": short by {shortfall:.4f}"
            )
            verdict.results.append(GateResult("beats champion", ok, detail))
    return verdict
