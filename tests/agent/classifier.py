"""A small trained classifier for serving tests: float32 numbers, a category (BYTES), labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bundle.conftest import make_manifest
from edgeml.bundle.manifest import InputField, Manifest, Outputs

from .conftest import with_golden

LABELS = ["bearing_wear", "ok", "overheating"]


def faults_classifier(folder: Path, version: int = 3) -> Manifest:
    """A scikit-learn pipeline exported by skl2onnx into ``folder``, and its manifest (model "faults").

    Inputs: temperature (float32, required, within [-50, 200]), vibration (float32, nullable),
    machine (one of m1, m2, m3). Outputs: label (strings) and probabilities per label.
    """
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "temperature": rng.normal(60, 15, n).astype(np.float32),
            "vibration": rng.gamma(2, 1, n).astype(np.float32),
            "machine": rng.choice(["m1", "m2", "m3"], n),
        }
    )
    target = np.where(
        frame.temperature > 75, "overheating", np.where(frame.vibration > 3, "bearing_wear", "ok")
    )
    prepare = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["temperature", "vibration"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["machine"]),
        ]
    )
    pipeline = make_pipeline(prepare, LogisticRegression(max_iter=500)).fit(frame, target)
    onx = convert_sklearn(
        pipeline,
        initial_types=[
            ("temperature", FloatTensorType([None, 1])),
            ("vibration", FloatTensorType([None, 1])),
            ("machine", StringTensorType([None, 1])),
        ],
        options={id(pipeline[-1]): {"zipmap": False}},
        target_opset=17,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onx.SerializeToString())
    manifest = make_manifest([folder / "model.onnx"], version, model="faults").model_copy(
        update={
            "inputs": [
                InputField(
                    name="temperature", kind="numeric", dtype="float32", nullable=False, min=-50, max=200
                ),
                InputField(name="vibration", kind="numeric", dtype="float32"),
                InputField(name="machine", kind="categorical", dtype="string", values=["m1", "m2", "m3"]),
            ],
            "outputs": Outputs(task="classification", names=["label", "probabilities"], labels=LABELS),
        }
    )
    golden = [{"temperature": 90.0, "vibration": 1.0, "machine": "m1"}]
    return with_golden(manifest, folder, golden)  # type: ignore[arg-type]
