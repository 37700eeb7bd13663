"""One training per family, shared by every export test module (training is the slow part)."""

from __future__ import annotations

import pytest

from edgeml.settings import Settings, load_settings
from edgeml.train.run import train
from raycluster import shared_local_ray
from train.helpers import faults_spec, make_snapshot, spec_from_dict, task_frame


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, str]]:
    """Model versions on the same simulated fault data: key -> models:/ URI.

    ``random_forest``, ``logistic``, ``mlp``, ``hist_gradient_boosting``: the fault example as is
    (its row features read the timestamp). ``mlp-ov``: without timestamp features, as OpenVINO
    needs; it optimises log_loss (a metric int8 always moves) with ``gates.quantization_tolerance: 0.05``.
    The forest and the boosted trees get one modest size (the default ranges reach 300 trees of depth
    24): these tests are about export, not the search. The MLPs keep the search's pick, which the
    int8 parity bounds were set on.
    """
    shared_local_ray()
    home = tmp_path_factory.mktemp("export-home")
    (home / "specs").mkdir()
    settings = load_settings({"EDGEML_HOME": str(home)})
    uris = {}
    runs = [(f, f, True) for f in ("random_forest", "logistic", "mlp", "hist_gradient_boosting")]
    runs += [("mlp-ov", "mlp", False)]
    sizes = {
        "random_forest": {"n_estimators": {"choices": [40]}, "max_depth": {"choices": [10]}},
        "hist_gradient_boosting": {"max_iter": {"choices": [60]}},
    }
    for key, family, with_time in runs:
        data = faults_spec(f"faults-{key.replace('_', '-')}", families=[family], trials=1, scheduler="fifo")
        data["gates"] = {}
        data["search"]["space"] = {family: sizes[family]} if family in sizes else {}
        if not with_time:
            data["features"]["row"] = [r for r in data["features"]["row"] if "(ts)" not in r["expr"]]
        if key == "mlp-ov":
            data["search"]["metric"] = "log_loss"
            data["gates"] = {"quantization_tolerance": 0.05}
        spec = spec_from_dict(data, home / "specs")
        report = train(spec, settings, make_snapshot(spec, settings, task_frame("classification")))
        uris[key] = f"models:/{report.model}/{report.version}"
    return settings, uris
