"""Retraining: the normal pipeline, submitted as a job, one at a time per dataset.

:func:`submit_retraining` runs ``edgeml pipeline run SPEC --since-snapshot S --channel
canary ...`` — the same ingestion, validation, search and gates as a manual run, so a
retrained model reaches devices only if it passes them (the champion comparison included),
and then only the canary of the groups named. The job ingests what has landed since; when
the data is still snapshot ``S`` (the one the serving model was trained on) it stops without
training — unless labelled rows from the field were landed for it, which are new data too
(training adds them, :mod:`edgeml.train.feedback`).

Where it runs: with a Ray dashboard address (given, or derived from ``settings.ray_address``
as ``http://<host>:8265``) it is a Ray job (``JobSubmissionClient``); the cluster's nodes
need ``edgeml`` on their PATH, the spec at the same path, and their own store credentials
(none are put in the job, whose environment the dashboard shows). In the embedded default
it is a local subprocess of this process, with its output in
``$EDGEML_HOME/retrain/<job id>.log``.

The last job per dataset is recorded in ``$EDGEML_HOME/retrain/<dataset>.json``; while it is
pending or running, another submission returns it instead of starting a second one. Every
submission's time is also appended to ``<dataset>.jobs.jsonl`` (the last 8 days kept), which the
policy's budget counts (:func:`submissions`). Local
jobs are children of the process that started them: :func:`stop_local_jobs` (the central
node calls it when it stops) ends them, as a service manager ending the node's unit would.
RETRAIN_JOBS counts ``submitted`` jobs, and each one's end once (``succeeded``/``failed``)
when :func:`current_retraining` sees it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from edgeml.audit import ACTOR_ENV
from edgeml.observability import set_span_attribute, traced, traceparent_env, track_retrain_job
from edgeml.settings import Settings

__all__ = [
    "JobState",
    "RetrainJob",
    "RetrainSubmission",
    "current_retraining",
    "stop_local_jobs",
    "submissions",
    "submit_retraining",
]

JobState = Literal["pending", "running", "succeeded", "failed", "stopped", "lost"]
_ACTIVE = ("pending", "running")
DASHBOARD_PORT = 8265

_RAY_STATES: dict[str, JobState] = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "stopped",
}

_LOCK = threading.Lock()
_CHILDREN: dict[str, subprocess.Popen[bytes]] = {}  # local jobs started by this process


class RetrainJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    backend: Literal["ray", "local"]
    dataset: str
    spec: str
    snapshot: str = ""  # trained on
    since_snapshot: str
    entrypoint: list[str]
    submitted_at: datetime
    address: str | None = None  # Ray dashboard
    pid: int | None = None  # local
    log: str | None = None  # local
    state: JobState = "pending"
    labels_snapshot: str | None = None  # the field labels' newest snapshot when it was submitted
    new_labels: bool = False  # labels newer than the last job's: it trains even on the same snapshot
    labels_until: datetime | None = None  # when the newest label landed for it arrived
    reason: str | None = None  # the trigger that submitted it, in words
    ended_at: datetime | None = None  # when it was first seen ended


class RetrainSubmission(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: RetrainJob
    submitted: bool  # False: a job for this dataset was still running, and that is ``job``


def _dashboard(settings: Settings) -> str | None:
    if not settings.ray_address:
        return None
    address = settings.ray_address if "://" in settings.ray_address else f"ray://{settings.ray_address}"
    return f"http://{urlsplit(address).hostname}:{DASHBOARD_PORT}"


def _state_file(settings: Settings, dataset: str) -> Path:
    return settings.home / "retrain" / f"{dataset}.json"


def _history_file(settings: Settings, dataset: str) -> Path:
    return settings.home / "retrain" / f"{dataset}.jobs.jsonl"


#: how far back the submission history goes (the longest budget window is a week)
HISTORY = timedelta(days=8)


def submissions(settings: Settings, dataset: str, since: datetime) -> list[datetime]:
    """When the dataset's jobs were submitted, oldest first, from ``since`` on."""
    path = _history_file(settings, dataset)
    if not path.is_file():
        return []
    times = [datetime.fromisoformat(json.loads(line)["at"]) for line in path.read_text().splitlines() if line]
    return [t for t in times if t >= since]


def _record_submission(settings: Settings, job: RetrainJob) -> None:
    kept = submissions(settings, job.dataset, job.submitted_at - HISTORY)
    lines = [json.dumps({"at": t.isoformat()}) for t in kept]
    lines.append(json.dumps({"at": job.submitted_at.isoformat(), "job": job.job_id}))
    _history_file(settings, job.dataset).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _refresh(job: RetrainJob) -> JobState:
    if job.backend == "ray":
        from ray.job_submission import JobSubmissionClient

        status = JobSubmissionClient(job.address).get_job_status(job.job_id)
        return _RAY_STATES[str(status.value)]
    child = _CHILDREN.get(job.job_id)
    if child is not None:
        code = child.poll()
        if code is None:
            return "running"
        del _CHILDREN[job.job_id]
        return "succeeded" if code == 0 else "failed"
    # started by an earlier process: its exit code went with it
    if not job.pid:
        return "lost"
    try:
        os.kill(job.pid, 0)
    except OSError:
        return "lost"
    return "running"


def current_retraining(spec_name: str, settings: Settings) -> RetrainJob | None:
    """The last retraining job of a dataset with its state brought up to date; None if never."""
    path = _state_file(settings, spec_name)
    if not path.is_file():
        return None
    job = RetrainJob.model_validate_json(path.read_text(encoding="utf-8"))
    if job.state not in _ACTIVE:
        return job
    state = _refresh(job)
    if state != job.state:
        ended = None if state in _ACTIVE else datetime.now(UTC)
        job = job.model_copy(update={"state": state, "ended_at": ended})
        path.write_text(job.model_dump_json(indent=2), encoding="utf-8")
        if state not in _ACTIVE:
            track_retrain_job("succeeded" if state == "succeeded" else "failed")
    return job


def _pipeline(
    edgeml: str, spec_path: Path, since_snapshot: str, groups: Sequence[str], stop_unchanged: bool = True
) -> list[str]:
    command = [edgeml, "pipeline", "run", str(spec_path)]
    if stop_unchanged:
        command += ["--since-snapshot", since_snapshot]
    command += ["--channel", "canary", "--percent", "100"]
    for group in groups:
        command += ["--group", group]
    return command


@traced("central.retrain", "since_snapshot")
def submit_retraining(
    spec_path: Path,
    settings: Settings,
    since_snapshot: str,
    *,
    groups: Sequence[str] = (),
    dashboard_address: str | None = None,
    entrypoint: list[str] | None = None,
    labels_snapshot: str | None = None,
    new_labels: bool = False,
    labels_until: datetime | None = None,
    reason: str | None = None,
    stop_unchanged: bool = True,
) -> RetrainSubmission:
    """Submit the pipeline on data newer than ``since_snapshot``, to the canary of ``groups``.

    See the module docstring. ``labels_snapshot``: the field labels' newest snapshot, recorded;
    ``new_labels``: it is newer than the last job's (then the job trains even when the data is
    still ``since_snapshot``); ``labels_until``: when the newest of those labels arrived;
    ``reason``: what triggered it, recorded; ``stop_unchanged`` False: the job trains even on
    unchanged data. ``entrypoint`` replaces the command (tests); it runs the same way.
    """
    from edgeml.ingest.lake import load_snapshot
    from edgeml.spec import load_spec
    from edgeml.store import store_from_settings

    spec_path = spec_path.resolve()
    spec = load_spec(spec_path)
    with _LOCK:
        running = current_retraining(spec.name, settings)
        if running is not None and running.state in _ACTIVE:
            return RetrainSubmission(job=running, submitted=False)
        newest = load_snapshot(store_from_settings(settings), spec.name)
        address = dashboard_address or _dashboard(settings)
        stop = stop_unchanged and not new_labels  # new labels are new data: no stop on an unchanged snapshot
        job_id = f"edgeml-retrain-{spec.name}-{uuid.uuid4().hex[:12]}"
        # what the job publishes is audited as done by this job, not by whoever runs the node
        env = {"EDGEML_STORE_URL": settings.store_url, ACTOR_ENV: f"central:retrain:{job_id}"}
        env |= traceparent_env()  # the job's pipeline run continues this span's trace
        set_span_attribute("edgeml.job_id", job_id)
        backend: Literal["ray", "local"] = "ray"
        pid = log = None
        if address is not None:
            command = entrypoint or _pipeline("edgeml", spec_path, since_snapshot, groups, stop)
            from ray.job_submission import JobSubmissionClient

            JobSubmissionClient(address).submit_job(
                entrypoint=shlex.join(command),
                submission_id=job_id,
                runtime_env={"env_vars": env},
                metadata={"dataset": spec.name, "since_snapshot": since_snapshot},
            )
        else:
            backend = "local"
            exe = Path(sys.executable).with_name("edgeml")
            command = entrypoint or _pipeline(str(exe), spec_path, since_snapshot, groups, stop)
            log = settings.home / "retrain" / f"{job_id}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            # the child gets this process's home and store, which may have come from flags
            env |= {"EDGEML_HOME": str(settings.home)}
            with log.open("wb") as out:
                child = subprocess.Popen(  # noqa: S603  # our own command, no shell
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=os.environ | env,
                    start_new_session=True,
                )
            _CHILDREN[job_id] = child
            pid = child.pid
        job = RetrainJob(
            job_id=job_id,
            backend=backend,
            dataset=spec.name,
            spec=str(spec_path),
            snapshot=newest.id,
            since_snapshot=since_snapshot,
            entrypoint=command,
            submitted_at=datetime.now(UTC),
            address=address,
            pid=pid,
            log=None if log is None else str(log),
            labels_snapshot=labels_snapshot,
            new_labels=new_labels,
            labels_until=labels_until,
            reason=reason,
        )
        track_retrain_job("submitted")
        path = _state_file(settings, spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(job.model_dump_json(indent=2), encoding="utf-8")
        _record_submission(settings, job)
        return RetrainSubmission(job=job, submitted=True)


def stop_local_jobs(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """End the local jobs this process started and still runs (SIGTERM, then SIGKILL); their ids."""
    stopped = []
    with _LOCK:
        for job_id, child in list(_CHILDREN.items()):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                stopped.append(job_id)
            del _CHILDREN[job_id]
        for path in (settings.home / "retrain").glob("*.json"):
            job = RetrainJob.model_validate_json(path.read_text(encoding="utf-8"))
            if job.job_id in stopped and job.state in _ACTIVE:
                stopped_job = job.model_copy(update={"state": "stopped", "ended_at": datetime.now(UTC)})
                path.write_text(stopped_job.model_dump_json(indent=2))
                track_retrain_job("failed")
    return stopped
