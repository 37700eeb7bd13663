"""Metrics on holdout windows that happen to miss a class."""

from __future__ import annotations

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from edgeml.train.metrics import evaluate


def test_a_class_missing_from_the_holdout_does_not_count_as_zero_f1() -> None:
    X_train = np.zeros((6, 1))
    model = Pipeline([("model", DummyClassifier(strategy="constant", constant="ok"))])
    model.fit(X_train, ["ok", "ok", "ok", "leak", "heat", "heat"])
    y = np.array(["ok", "ok", "ok"])  # no leak, no heat in this window; all predicted right
    scores = evaluate("classification", model, np.zeros((3, 1)), y)
    assert scores["f1_macro"] == 1.0
    assert scores["accuracy"] == 1.0
