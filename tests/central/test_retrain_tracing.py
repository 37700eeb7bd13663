"""A retraining job runs under the central node's ``central.retrain`` span: the job gets its traceparent."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from edgeml.central.retrain import current_retraining, submit_retraining
from edgeml.ingest.lake import take_snapshot
from edgeml.settings import Settings
from edgeml.spec import load_spec
from edgeml.store import store_from_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "src" / "edgeml" / "examples" / "pump-faults.yaml"


def test_the_retraining_job_continues_the_trace_of_its_submission(tmp_path: Path, spans: Any) -> None:
    settings = Settings(home=tmp_path / "home")
    take_snapshot(store_from_settings(settings), load_spec(EXAMPLE))
    # stands in for `edgeml pipeline run`, which opens its root span under $TRACEPARENT
    script = "import os; print(os.environ['TRACEPARENT'])"
    job = submit_retraining(
        EXAMPLE, settings, "an-older-snapshot", entrypoint=[sys.executable, "-c", script]
    ).job
    deadline = time.monotonic() + 30
    while (current := current_retraining("pump-faults", settings)) and current.state in (
        "pending",
        "running",
    ):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)
    (submitted,) = spans.get_finished_spans()
    assert submitted.name == "central.retrain"
    assert submitted.attributes == {
        "edgeml.since_snapshot": "an-older-snapshot",
        "edgeml.job_id": job.job_id,
    }
    assert job.log is not None
    ctx = submitted.context
    version, trace_id, parent, flags = Path(job.log).read_text().strip().split("-")
    assert (version, trace_id, parent) == ("00", f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
