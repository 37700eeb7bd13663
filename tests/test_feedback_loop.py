"""The feedback loop end to end (#24): predictions, labels, a retrain that uses them, a worse
challenger kept from the canary, and the evidence in ``edgeml central status``.

Real parts on 127.0.0.1: ``edgeml pipeline run`` on a local Ray and a local store, the central
node on uvicorn with its DuckDB store process, and an agent with its HTTP server that pulls
the signed bundle and ships its prediction log. A label's span links to the request span that
predicted, seen by the SDK's in-memory exporter.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agent.live import live_agent
from central.conftest import ADMIN, bearer, make_config, running
from edgeml.agent.config import AgentConfig
from edgeml.central.config import load_central_config
from edgeml.cli import main
from edgeml.ingest.labels import labels_dataset
from edgeml.ingest.lake import list_snapshots
from edgeml.settings import load_settings
from edgeml.store import store_from_settings
from edgeml.train.registry import last_comparison
from train.helpers import cheap_faults, simulate_frame

pytestmark = pytest.mark.slow

NAME = "loop-faults"


def _spec(folder: Path, **search: Any) -> Path:
    data = cheap_faults(NAME)
    data["profiles"] = ["x86-64-generic"]
    data["features"]["window"] = []  # rows the device answers alone
    data["search"].update(search)
    path = folder / f"{NAME}-{len(search)}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _records(agent: httpx.Client, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``n`` readings of another day in the agent's input schema, and their true faults."""
    inputs = [i["name"] for i in agent.get(f"/v2/models/{NAME}").json()["inputs"]]
    frame = simulate_frame(seed=31, fault_rate=0.05).head(n)
    records = []
    for _, row in frame.iterrows():
        record = {}
        for name in inputs:
            value = row[name]
            value = value.timestamp() if hasattr(value, "timestamp") else value
            record[name] = None if isinstance(value, float) and math.isnan(value) else value
        records.append(record)
    return records, [str(f) for f in frame["fault"]]


def _wait(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.usefixtures("clean_env")
def test_labels_reach_a_retrain_and_a_worse_challenger_is_kept_from_the_canary(
    tmp_path: Path, spans: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from raycluster import shared_local_ray

    settings = load_settings()
    store = store_from_settings(settings)
    args = ["--machines", "3", "--readings", "400", "--seed", "8", "--fault-rate", "0.05"]
    assert main(["simulate", "sensors", *args, "--store-key", "landing/pumps/a.csv"]) == 0
    shared_local_ray()
    # v1: the first version to pass its gates is the champion, on stable
    assert main(["pipeline", "run", str(_spec(tmp_path))]) == 0
    champion = last_comparison(store, NAME)
    assert champion is not None
    assert (champion.challenger, champion.champion, champion.passed) == ("1", None, True)
    assert main(["keys", "export-public", "--out", str(tmp_path / "keyring")]) == 0

    central_yaml = tmp_path / "central" / "central.yaml"
    config = make_config(
        tmp_path / "central",
        store={"url": settings.store_url},
        keyring=str(tmp_path / "keyring"),
        gate={"keys_home": str(settings.home)},
        retrain={"spec": str(_spec(tmp_path)), "home": str(settings.home)},
    )
    central_yaml.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    with running(load_central_config(central_yaml)) as central:
        token = central.register("dev-1", group="line-a", model=NAME)
        agent_config = AgentConfig.model_validate(
            {
                "device_id": "dev-1",
                "group": "line-a",
                "profile": "x86-64-generic",
                "model": NAME,
                "store": {"url": settings.store_url},
                "keyring": str(tmp_path / "keyring"),
                "state_dir": str(tmp_path / "device"),
                "sync": {"interval_s": 0.2, "health_window_s": 0},
                "http": {"port": 0},
                "central": {"url": str(central.client.base_url), "token": token},
            }
        )
        with live_agent(agent_config) as (_, agent):
            _wait(lambda: agent.get("/v2/health/ready").status_code == 200, "the agent to load v1")
            records, truth = _records(agent, 100)
            ids: list[str] = []
            for start in range(0, len(records), 10):  # 10 rows a request: ids <answer id>/<row>
                answer = agent.post("/predict", json=records[start : start + 10])
                assert answer.status_code == 200, answer.text
                ids += [f"{answer.json()['id']}/{row}" for row in range(10)]

            def shipped() -> bool:
                return central.store.fetch("SELECT count(*) FROM predictions")[0][0] == len(ids)

            _wait(shipped, "the agent's prediction log to reach the central node")
        labels = [{"prediction_id": p, "label": t} for p, t in zip(ids, truth, strict=True)]
        labels += [labels[0], {"prediction_id": "never-predicted", "label": "ok"}]
        stored = central.client.post("/v1/feedback", json={"labels": labels}, headers=bearer(ADMIN)).json()
        assert stored == {
            "accepted": 101,
            "duplicates": 1,
            "joined": 100,
            "unknown": 1,
            "unknown_ids": ["never-predicted"],
        }
        landed = central.client.post("/v1/feedback/land", json={"model": NAME}, headers=bearer(ADMIN)).json()
        assert landed["rows"] == 100
        assert [s.rows for s in list_snapshots(store, labels_dataset(NAME))] == [100]

        # the trace of a prediction reaches its label
        requests = {s.context.span_id: s for s in spans.get_finished_spans() if s.name == "agent.request"}
        (feedback,) = [s for s in spans.get_finished_spans() if s.name == "central.feedback"]
        assert feedback.links
        assert all(link.context.span_id in requests for link in feedback.links)

        # v2: a worse challenger (a starved logistic regression), trained with the field's labels
        worse = _spec(tmp_path, families=["logistic"], space={"logistic": {"C": {"choices": [1e-6]}}})
        code = main(["pipeline", "run", str(worse), "--channel", "canary", "--percent", "100"])
        out = capsys.readouterr().out
        assert code != 0 or "failed its gates" in out, out
        comparison = last_comparison(store, NAME)
        assert comparison is not None
        assert (comparison.challenger, comparison.champion, comparison.passed) == ("2", "1", False)
        assert comparison.labelled["rows"] == 100
        assert comparison.labelled["trained"] + comparison.labelled["held_out"] == 100
        assert [e["name"] for e in comparison.evidence] == ["holdout", "field labels"]
        assert "kept from the canary" in comparison.outcome
        assert "canary" not in central.app.state.central.targets.pointers(NAME)  # nothing published

        assert main(["central", "status", "--config", str(central_yaml)]) == 0
        status = capsys.readouterr().out
        assert "quality gate: on" in status
        assert f"{NAME}: challenger v2 vs champion v1: failed" in status
        assert "field labels (" in status
        assert "✗ beats champion" in status
        assert "kept from the canary" in status
        assert main(["central", "status", "--config", str(central_yaml), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["comparisons"][0]["evidence"] == comparison.evidence
