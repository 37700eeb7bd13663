"""The retraining decision of one monitor round: which trigger fires, which hold holds, and why.

:func:`decide` is pure: it reads the spec's ``retrain:`` section (:class:`~edgeml.spec.models.Retrain`)
and what the round saw (:class:`Seen`), and returns a :class:`Decision` in words, with the trigger
to submit when one fired and no hold held it. Triggers are tried in the order drift,
accuracy_drop, label_volume, schedule; the first one no hold holds wins. One job at a time per
dataset always holds; ``no_new_data`` holds only the version-bound triggers (drift, accuracy):
label_volume means new data, and a scheduled job finds out itself (it stops without training when
its ingest brings nothing new, ``--since-snapshot``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from edgeml.central.monitor import GroupStatus
from edgeml.central.retrain import RetrainJob
from edgeml.spec.models import Retrain

__all__ = ["Decision", "Fired", "Seen", "Served", "decide", "describe", "in_words"]

TriggerName = Literal["drift", "accuracy_drop", "label_volume", "schedule"]
_DAY, _WEEK = timedelta(days=1), timedelta(days=7)


@dataclass(frozen=True)
class Served:
    """The newest version on any channel, as its signed manifest describes it (None: unreadable)."""

    version: int
    snapshot: str | None
    built: datetime | None
    holdout_accuracy: float | None


@dataclass(frozen=True)
class Seen:
    """What one round saw of a model: its served version, its groups' statuses, its jobs and labels."""

    now: datetime
    served: Served | None
    statuses: Sequence[GroupStatus]  # this round's, of the served version (all versions without one)
    last_job: RetrainJob | None
    submitted: Sequence[datetime]  # the dataset's job submissions of the last 7 days
    new_labels: int  # field labels joined to predictions that arrived since the last job


@dataclass(frozen=True)
class Fired:
    """A trigger that fired: the data its job starts after, and the groups whose canary it goes to."""

    trigger: TriggerName
    reason: str
    version: int
    snapshot: str
    groups: tuple[str, ...] = ()


class Decision(BaseModel):
    """The policy's last decision about a model, and why (``edgeml central status``, the fleet page)."""

    model: str
    at: datetime
    outcome: Literal["retrained", "held", "waiting", "error"]
    trigger: TriggerName | None = Field(None, description="the trigger that fired (held or submitted)")
    reason: str = Field(description="the decision in words, e.g. 'retrained: 520 new labels ≥ 500'")
    triggers: list[str] = Field(default_factory=list, description="each trigger's state this round")
    job_id: str | None = None


def in_words(span: timedelta) -> str:
    """``4 min``, ``3 h 20 min``, ``2 d 5 h``: a wait as a person reads it (rounded up to a unit)."""
    seconds = max(0, int(-(-span.total_seconds() // 1)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = -(-seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def decide(model: str, policy: Retrain, seen: Seen) -> tuple[Decision, Fired | None]:
    """This round's decision about ``model``, and the trigger to submit (None: no job now)."""
    checks = [
        _drift(policy, seen),
        _accuracy(policy, seen),
        _labels(policy, seen),
        _schedule(policy, seen),
    ]
    states = [f"{name}: {state}" for name, state, _ in checks]
    fired = [f for _, _, f in checks if f is not None]
    if not fired:
        return Decision(
            model=model, at=seen.now, outcome="waiting", reason="waiting: no trigger fired", triggers=states
        ), None
    holds = [(f, _hold(policy, seen, f)) for f in fired]
    go = next((f for f, hold in holds if hold is None), None)
    if go is not None:
        reason, outcome = f"retrained: {go.reason}", "retrained"
    else:
        go, hold = holds[0]
        reason, outcome = f"held: {hold} ({go.trigger}: {go.reason})", "held"
    decision = Decision(
        model=model, at=seen.now, outcome=outcome, trigger=go.trigger, reason=reason, triggers=states
    )
    return decision, go if outcome == "retrained" else None


def _drift(policy: Retrain, seen: Seen) -> tuple[str, str, Fired | None]:
    if not policy.triggers.drift:
        return "drift", "off", None
    drifted = [s for s in seen.statuses if s.drifted]
    if not drifted:
        return "drift", "no drift breach this round", None
    version = max(s.version for s in drifted)
    mine = [s for s in drifted if s.version == version]
    reason = f"v{version} drifted in " + "; ".join(f"{s.group}: {', '.join(s.drifted)}" for s in mine)
    groups = tuple(s.group for s in mine if s.group)
    return "drift", reason, Fired("drift", reason, version, mine[0].snapshot, groups)


def _accuracy(policy: Retrain, seen: Seen) -> tuple[str, str, Fired | None]:
    limit = policy.triggers.accuracy_drop
    if limit is None:
        return "accuracy_drop", "off", None
    measured = []
    for s in seen.statuses:
        reference = seen.served.holdout_accuracy if seen.served is not None else None
        if s.estimate is not None and s.estimate.reference is not None:
            reference = s.estimate.reference
        if reference is None:
            continue
        if s.realized is not None and s.realized.rows >= policy.triggers.accuracy_min_labels:
            measured.append((s, "realized", s.realized.accuracy, reference))
        elif s.estimate is not None:
            measured.append((s, "estimated", s.estimate.estimated, reference))
        elif (cbpe := _cbpe(s)) is not None:
            measured.append((s, "NannyML CBPE", cbpe, reference))
    if not measured:
        return "accuracy_drop", "no accuracy measured against a holdout accuracy this round", None
    dropped = [m for m in measured if m[3] - m[2] > limit]
    if not dropped:
        worst = max(m[3] - m[2] for m in measured)
        return "accuracy_drop", f"largest drop {worst:.3f} ≤ {limit:g}", None
    s, kind, value, reference = max(dropped, key=lambda m: m[3] - m[2])
    reason = (
        f"v{s.version} {kind} accuracy {value:.3f} in {s.group} is {reference - value:.3f} below its "
        f"holdout {reference:.3f} (> {limit:g})"
    )
    groups = tuple(sorted({m[0].group for m in dropped if m[0].version == s.version and m[0].group}))
    return "accuracy_drop", reason, Fired("accuracy_drop", reason, s.version, s.snapshot, groups)


def _cbpe(status: GroupStatus) -> float | None:
    """NannyML's CBPE accuracy of the group's last pass (row samples), when there is one."""
    run = status.nannyml
    found = run.report.performance if run is not None and run.report is not None else None
    return found.value if found is not None and found.metric == "accuracy" else None


def _served_data(seen: Seen) -> tuple[int, str] | str:
    """The served version and its snapshot, or why there is none to retrain."""
    if seen.served is None:
        return "no served version to retrain"
    if seen.served.snapshot is None:
        return f"the manifest of the served v{seen.served.version} is not readable"
    return seen.served.version, seen.served.snapshot


def _labels(policy: Retrain, seen: Seen) -> tuple[str, str, Fired | None]:
    needed = policy.triggers.label_volume
    if needed is None:
        return "label_volume", "off", None
    if seen.new_labels < needed:
        return "label_volume", f"{seen.new_labels} of {needed} new labels", None
    reason = f"{seen.new_labels} new labels ≥ {needed}"
    served = _served_data(seen)
    if isinstance(served, str):
        return "label_volume", f"{reason}, but {served}", None
    return "label_volume", reason, Fired("label_volume", reason, *served)


def _schedule(policy: Retrain, seen: Seen) -> tuple[str, str, Fired | None]:
    every = policy.triggers.schedule
    if every is None:
        return "schedule", "off", None
    served = _served_data(seen)
    if isinstance(served, str):
        return "schedule", served, None
    if seen.last_job is not None:
        since, what = seen.last_job.submitted_at, "the last job"
    elif seen.served is not None and seen.served.built is not None:
        since, what = seen.served.built, f"v{seen.served.version} was built"
    else:
        return "schedule", "no job yet and the served version's build time is unknown", None
    due = since + every
    if seen.now < due:
        return "schedule", f"next in {in_words(due - seen.now)}", None
    reason = f"{in_words(seen.now - since)} since {what} (every {in_words(every)})"
    return "schedule", reason, Fired("schedule", reason, *served)


def _hold(policy: Retrain, seen: Seen, fired: Fired) -> str | None:
    """What keeps ``fired`` from starting a job now, in words; None: nothing."""
    holds, last, now = policy.holds, seen.last_job, seen.now
    if last is not None and last.state in ("pending", "running"):
        return f"job {last.job_id} is still {last.state} (one job at a time per dataset)"
    same_data = last is not None and last.since_snapshot == fired.snapshot
    if last is not None and same_data and last.state == "failed":
        ended = last.ended_at or last.submitted_at
        left = ended + holds.failure_cooldown - now
        if left > timedelta(0):
            return (
                f"job {last.job_id} failed on this data; it is tried again in {in_words(left)} "
                f"(failure_cooldown {in_words(holds.failure_cooldown)})"
            )
    elif (
        last is not None
        and same_data
        and holds.no_new_data
        and fired.trigger in ("drift", "accuracy_drop")
        and seen.new_labels == 0
    ):
        return (
            f"no new data: v{fired.version}'s data (snapshot {fired.snapshot}) went into job "
            f"{last.job_id} and no field labels arrived since"
        )
    if last is not None and holds.cooldown is not None:
        left = last.submitted_at + holds.cooldown - now
        if left > timedelta(0):
            return f"cooldown {in_words(left)} left (of {in_words(holds.cooldown)} between jobs)"
    for most, window, per in ((holds.budget.per_day, _DAY, "day"), (holds.budget.per_week, _WEEK, "week")):
        if most is None:
            continue
        recent = sorted(t for t in seen.submitted if t > now - window)
        if len(recent) >= most:
            free = recent[len(recent) - most] + window - now
            return f"budget {most} jobs/{per} reached; the next fits in {in_words(free)}"
    return None


def describe(policy: Retrain) -> tuple[list[str], list[str]]:
    """The policy's triggers and holds, in words."""
    t, h = policy.triggers, policy.holds
    triggers = [
        "drift: a drift breach of the newest served version in a device group (to that group's canary)"
        if t.drift
        else "drift: off",
        f"accuracy_drop: realized accuracy (with {t.accuracy_min_labels}+ labels) or else the estimate "
        f"more than {t.accuracy_drop:g} below the served version's holdout accuracy"
        if t.accuracy_drop is not None
        else "accuracy_drop: off",
        f"label_volume: {t.label_volume} new field labels since the last job"
        if t.label_volume is not None
        else "label_volume: off",
        f"schedule: every {in_words(t.schedule)} since the last job"
        if t.schedule is not None
        else "schedule: off",
    ]
    budget = [f"{n} jobs/{per}" for n, per in ((h.budget.per_day, "day"), (h.budget.per_week, "week")) if n]
    holds = [
        "one job at a time per dataset",
        "no_new_data: a drifted or dropped version whose data went into a job already waits for new field "
        "labels, and a job stops without training when its ingest finds nothing new"
        if h.no_new_data
        else "no_new_data: off (jobs train on the same data again)",
        f"failure_cooldown: after a failed job, the same data waits {in_words(h.failure_cooldown)}",
        f"cooldown: {in_words(h.cooldown)} between two jobs" if h.cooldown is not None else "cooldown: none",
        f"budget: at most {', '.join(budget)}" if budget else "budget: none",
    ]
    return triggers, holds
