"""Tracking helpers: what a saved model may contain, where MLflow lives, which commit trained it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from edgeml.errors import UserError
from edgeml.settings import Settings
from edgeml.train.search import fit_trial
from edgeml.train.tracking import TRUSTED_MODULES, git_commit, tracking_uri, trusted_types

from .helpers import TaskData


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A transformer from a module edgeml does not trust (this test module)."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X) * 2


ROW_FEATURES = "edgeml.train.pipeline.RowFeatures"


def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return X, (X[:, 0] > 0).astype(int)


def test_a_lambda_inside_the_model_is_refused() -> None:
    X, y = xy()
    model = Pipeline([("f", FunctionTransformer(func=lambda a: a * 2)), ("m", LogisticRegression())]).fit(
        X, y
    )
    with pytest.raises(UserError, match=r"does not trust for serialisation: .*<lambda>"):
        trusted_types(model)


def test_a_type_from_an_untrusted_module_is_refused() -> None:
    X, y = xy()
    model = Pipeline([("d", Doubler()), ("m", LogisticRegression())]).fit(X, y)
    with pytest.raises(UserError) as caught:
        trusted_types(model)
    assert f"{Doubler.__module__}.Doubler" in caught.value.message


def test_a_plain_sklearn_pipeline_needs_no_extra_trust() -> None:
    X, y = xy()
    model = Pipeline([("s", StandardScaler()), ("m", LogisticRegression())]).fit(X, y)
    assert trusted_types(model) == []


@pytest.mark.parametrize(
    ("task", "family", "expected"),
    [
        (
            "classification",
            "mlp",
            {"edgeml.train.mlp.MLPClassifierTorch", "edgeml.train.pipeline.RowFeatures"},
        ),
        ("classification", "random_forest", {"sklearn.tree._tree.Tree", "edgeml.train.pipeline.RowFeatures"}),
        ("regression", "hist_gradient_boosting", set()),
        ("anomaly", "isolation_forest", {"edgeml.train.families.IsolationForestThreshold"}),
    ],
)
def test_trained_pipelines_list_only_sklearn_numpy_and_edgeml_types(
    task_data: Callable[[str], TaskData], task: str, family: str, expected: set[str]
) -> None:
    import skops.io as sio

    td = task_data(task)
    small = {"mlp": {"mlp.epochs": 2}, "random_forest": {"random_forest.n_estimators": 5}}
    model = fit_trial(td.spec, td.data, {"family": family, **small.get(family, {})})
    types = trusted_types(model)
    assert expected <= set(types)
    assert all(t.startswith(TRUSTED_MODULES) for t in types)
    # what is listed is exactly what loading needs
    loaded = sio.loads(sio.dumps(model), trusted=types)
    assert np.array_equal(loaded.predict(td.data.X_hold), model.predict(td.data.X_hold))


def test_tracking_uri_defaults_to_sqlite_under_the_home(settings: Settings) -> None:
    uri = tracking_uri(settings)
    assert uri == f"sqlite:///{(settings.home / 'mlflow.db').resolve()}"
    assert tracking_uri(settings, "http://mlflow.internal:5000") == "http://mlflow.internal:5000"


def test_git_commit(tmp_path: Path) -> None:
    here = git_commit(Path(__file__).parent)
    assert re.fullmatch(r"[0-9a-f]{40}", here)
    assert git_commit(tmp_path) == "unknown"  # not a repository


_SKOPS_PROBE = """
import json, sys
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
if sys.argv[1] == "edgeml":
    from edgeml.train.tracking import import_skops
    sio = import_skops()
else:
    import skops.io as sio
torch_loaded = "torch" in sys.modules
X = np.c_[np.random.default_rng(0).random((60, 2)), np.arange(60) % 3]
y = np.arange(60) % 2
columns = ColumnTransformer([("num", StandardScaler(), [0, 1]), ("cat", OneHotEncoder(), [2])])
models = [Pipeline([("pre", columns), ("m", m)]).fit(X, y)
          for m in (RandomForestClassifier(n_estimators=3, random_state=0),
                    HistGradientBoostingClassifier(max_iter=3, random_state=0))]
types = [sorted(sio.get_untrusted_types(data=sio.dumps(m))) for m in models]
loaded = [sio.loads(sio.dumps(m), trusted=t).predict(X).tolist() for m, t in zip(models, types)]
import torch  # still importable afterwards
out = {"torch_before": torch_loaded, "types": types, "loaded": loaded, "torch": torch.__version__}
print(json.dumps(out))
"""


def test_skops_imported_without_torch_trusts_the_same_types_and_torch_still_imports() -> None:
    import json
    import subprocess
    import sys

    def probe(how: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", _SKOPS_PROBE, how], capture_output=True, text=True, check=True, timeout=300
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    ours, plain = probe("edgeml"), probe("plain")
    assert plain["torch_before"]  # skops alone pulls torch in: what import_skops avoids
    assert not ours["torch_before"]
    assert ours["types"] == plain["types"]
    assert ours["loaded"] == plain["loaded"]
    assert ours["torch"] == plain["torch"]
