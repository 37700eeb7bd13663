"""The demo report's drift, from a real central node's ``/v1/drift`` history.

line-b drifts on v1 and alerts; v2, trained for line-b on its drifted rows, judges line-b by
line-b's own reference: the same drifted telemetry is back in band. The report's data says so
per input, with the band each value was judged by, and its page shows value, band and alert.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.conftest import Publisher, publisher  # noqa: F401 (publisher: a fixture)
from central.conftest import ADMIN, Central, bearer, make_config, running
from drift.test_groups import _group_version, _rows
from drift.test_live import CHUNK, _published, _served
from edgeml.agent.model import LoadedModel
from edgeml.central.monitor import Monitor
from edgeml.demo.report import back_to_baseline, drift_lines, drift_section


def _post(central: Central, model: LoadedModel, group: str, rows: pd.DataFrame) -> None:
    device = f"gw-{group}-v{model.manifest.version}"
    token = central.register(device, group=group, model="pump")
    for batch in _served(model, device, group, rows):
        assert central.post(batch, token).status_code in (200, 202)


@pytest.mark.slow
def test_the_drifted_group_goes_back_to_baseline_on_the_version_trained_for_it(
    publisher: Publisher,  # noqa: F811
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(5)
    old, new = _rows(rng, 4000), _rows(rng, 3000, shift=2.0)
    v1 = _published(publisher, tmp_path, old, 1)
    v2 = _group_version(publisher, tmp_path, old, new)
    config = make_config(
        tmp_path / "central",
        store={"url": publisher.store.url},
        keyring=str(publisher.ring),
        monitor={"enabled": False},
    )
    with running(config) as central:
        monitor = Monitor(
            central.store, central.app.state.central.targets.manifest, window=timedelta(minutes=5), min_rows=1
        )
        central.app.state.central.monitor = monitor
        _post(central, v1, "line-a", _rows(rng, CHUNK))
        _post(central, v1, "line-b", _rows(rng, CHUNK, shift=2.0))
        monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1))
        _post(central, v2, "line-b", _rows(rng, CHUNK, shift=2.0))  # promoted: the same conditions
        monitor.evaluate(datetime.now(UTC) + timedelta(seconds=2))
        history = central.client.get("/v1/drift", headers=bearer(ADMIN)).json()["history"]

    lines = drift_lines(history)
    assert set(lines) == {"a", "b"}
    a = lines["a"]
    assert set(a) == {"line-a v1", "line-b v1", "line-b v2"}
    assert [p["alert"] for p in a["line-b v1"]] == [True, True]  # two rounds, both over the band
    assert [p["alert"] for p in a["line-b v2"]] == [False]
    assert [p["reference"] for p in a["line-b v2"]] == ["group"]
    assert not any(p["alert"] for p in a["line-a v1"])
    for points in a.values():
        assert all(p["upper"] > 0 and p["lower"] is None for p in points)  # the band each was judged by
    peak = max(a["line-b v1"], key=lambda p: p["value"])
    last = a["line-b v2"][-1]
    assert last["value"] < last["upper"] < peak["value"]
    (said,) = back_to_baseline(history, "line-b")
    assert said == (
        f"a in line-b: {peak['value']:.3f} over its band {peak['upper']:.3f} on v1; "
        f"{last['value']:.3f} within {last['upper']:.3f} on v2 (line-b's own reference): back in band"
    )
    assert back_to_baseline(history, "line-a") == []  # nothing alerted there

    section = drift_section(history, "line-b")
    assert section.count("data:image/png;base64,") == 1
    assert f"<li>{said}</li>".replace("'", "&#x27;") in section
    table = section.split('<table id="drift-latest">')[1]
    row = next(
        r for r in table.split("<tr>") if r.startswith("<td>line-b</td><td>v2</td>") and "<td>a</td>" in r
    )
    assert row == (
        f"<td>line-b</td><td>v2</td><td>group</td><td>a</td><td>js</td><td>{last['value']:.4f}</td>"
        f"<td>0.0000 – {last['upper']:.4f}</td><td>ok</td></tr>"
    )
