"""Fitting on every training row of a snapshot too large for memory, batch by batch.

With ``pipeline.data_volume`` medium or large, the families that can learn incrementally
(:attr:`~edgeml.train.families.Family.incremental`: logistic and linear by SGD, the MLP) are
not fitted on the sample: the learned preprocessing (imputation medians, scaling, one-hot
categories) is fitted on the sample of the same splits — statistics a 1,000,000-row stratified
sample estimates well — then the estimator takes every row of the splits from the
:class:`~edgeml.train.stream.SplitStream`, one batch at a time, for each epoch. Trials are still
scored on the validation sample, the model on the holdout sample, both drawn from the whole
snapshot's splits. Memory holds one batch and the samples, whatever the snapshot's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from edgeml.errors import UserError
from edgeml.spec.models import Spec
from edgeml.train.data import TrainingData, model_inputs, targets
from edgeml.train.families import FAMILIES, Rows, sgd_epochs
from edgeml.train.metrics import evaluate
from edgeml.train.pipeline import build_pipeline
from edgeml.train.stream import TRAIN

__all__ = ["fit_incremental", "streams"]

#: tasks whose incremental families train on the stream (anomaly calibrates on a sample)
STREAMED_TASKS = ("classification", "regression")


def streams(spec: Spec, data: TrainingData, family: str) -> bool:
    """Whether ``family`` trains on every row of the stream (else on the sample)."""
    incremental = FAMILIES[family].incremental is not None
    return data.stream is not None and incremental and spec.task in STREAMED_TASKS


def _sample(data: TrainingData, splits: Sequence[int]) -> tuple[pd.DataFrame, np.ndarray | None]:
    if tuple(splits) == (TRAIN,):
        return data.X_train, data.y_train
    X = pd.concat([data.X_train, data.X_val], ignore_index=True)
    y = None if data.y_train is None or data.y_val is None else np.concatenate([data.y_train, data.y_val])
    return X, y


def fit_incremental(
    spec: Spec,
    data: TrainingData,
    family: str,
    params: dict[str, Any],
    seed: int,
    splits: Sequence[int] = (TRAIN,),
    report: Callable[[dict[str, float]], None] | None = None,
) -> Any:
    """Fit ``family`` on every row of ``splits`` (train; train and validation for the final model)."""
    stream, build = data.stream, FAMILIES[family].incremental
    assert stream is not None
    assert build is not None
    assert spec.target is not None
    rows = Rows(sum(stream.rows[k] for k in splits), stream.class_rows)
    pipeline = build_pipeline(spec, data.layout, build(spec.task, params, seed, rows), params)
    head, model = pipeline[:-1], pipeline[-1]
    head.fit(*_sample(data, splits))
    classes = {"classes": np.asarray(data.labels)} if data.labels is not None else {}
    epochs = int(params.get("epochs", model.epochs)) if FAMILIES[family].iterative else sgd_epochs(rows.total)
    for epoch in range(1, epochs + 1):
        for frame in stream.batches(splits, epoch):
            y = frame[spec.target]
            if missing := int(y.isna().sum()):
                raise UserError(
                    f"{missing:,} rows of snapshot {data.snapshot} have no target ({spec.target})",
                    hint=f"add a not_null expectation on {spec.target} so validation quarantines them",
                )
            model.partial_fit(head.transform(model_inputs(frame, data.layout)), targets(spec, y), **classes)
        if data.field_train is not None and TRAIN in splits:  # the field's labels, once per pass
            X_field, y_field = data.field_train
            model.partial_fit(head.transform(X_field), y_field, **classes)
        if report is not None:
            report({**evaluate(spec.task, pipeline, data.X_val, data.y_val), "epoch": epoch})
    if hasattr(model, "_drop_training_state"):
        model._drop_training_state()
    return pipeline
