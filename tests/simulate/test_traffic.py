"""The demo gateway's traffic keeps the prediction id of every answered row, for its labels."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from agent.classifier import faults_classifier
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.predlog import PredictionLog
from edgeml.agent.server import create_app
from edgeml.simulate.traffic import send


class _Agent:
    """What ``send`` needs of an agent's client (``post``), over the app in this process."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
                return await client.post(path, **kwargs)

        return asyncio.run(go())


def test_every_labelled_row_keeps_the_id_the_agent_logged_it_under(tmp_path: Path) -> None:
    holder = ModelHolder()
    holder.swap(LoadedModel(tmp_path, faults_classifier(tmp_path)))
    log = PredictionLog()
    records = [{"temperature": 40.0 + i, "vibration": 1.0, "machine": "m1"} for i in range(7)]
    truth = ["ok"] * 7
    result = send(_Agent(create_app(holder, prediction_log=log)), records, truth, batch=3)  # 3, 3, 1 rows
    assert result.rows == 7
    assert len(result.prediction_ids) == len(result.pairs) == 7
    assert [p.rsplit("/", 1)[-1] for p in result.prediction_ids[:6]] == ["0", "1", "2", "0", "1", "2"]
    assert "/" not in result.prediction_ids[6]  # a one-row answer's id is the row's
    batch, _ = log.take("dev-1") or (None, None)
    assert batch is not None
    assert [p.prediction_id for p in batch.predictions] == result.prediction_ids
