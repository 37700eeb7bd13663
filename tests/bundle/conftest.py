"""Bundles without training: a small real ONNX model, hand-written manifests, real stores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeml.bundle.build import WEIGHTS_FILE, BuildResult, _entry, publish_bundle
from edgeml.bundle.keys import KeyRing, Signer, init_keys, load_signer
from edgeml.bundle.manifest import Golden, Histogram, InputField, Manifest, Outputs, Reference
from edgeml.store.base import ObjectStore
from edgeml.store.local import LocalStore
from edgeml.store.s3 import S3Store
from raycluster import shared_local_ray


def write_model(folder: Path, seed: int, *, external: bool = True) -> list[Path]:
    """y = sum(concat(a, b) @ W), W of 2 x 256 doubles (4 KiB), stored apart when ``external``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = np.random.default_rng(seed).normal(size=(2, 256))
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("ReduceSum", ["h", "axes"], ["variable"], keepdims=1),
        ],
        "edgeml",
        [
            helper.make_tensor_value_info("a", TensorProto.DOUBLE, [None, 1]),
            helper.make_tensor_value_info("b", TensorProto.DOUBLE, [None, 1]),
        ],
        [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for stale in (folder / "model.onnx", folder / WEIGHTS_FILE):
        stale.unlink(missing_ok=True)
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=external,
        location=WEIGHTS_FILE,
        size_threshold=1024,
    )
    return sorted(folder.iterdir())


def make_manifest(
    files: list[Path],
    version: int = 1,
    *,
    model: str = "pump",
    profile: str = "x86-64-generic",
    expires: datetime | None = None,
    created: datetime | None = None,
    compliance: str = "none",
) -> Manifest:
    created = created or datetime.now(UTC)
    expires = expires or created + timedelta(days=30)
    return Manifest(
        model=model,
        version=version,
        profile=profile,
        runtime="onnxruntime",
        precision="fp32",
        created=created.isoformat(timespec="seconds"),
        expires=expires.isoformat(timespec="seconds"),
        files=[_entry(p) for p in files],
        inputs=[
            InputField(name="a", kind="numeric", dtype="float64", min=-10, max=10),
            InputField(name="b", kind="numeric", dtype="float64"),
        ],
        outputs=Outputs(task="regression", names=["variable"]),
        reference=Reference(
            rows=3,
            source="test",
            features={"a": Histogram(edges=[0.0], counts=[1, 2]), "b": Histogram(edges=[0.0], counts=[2, 1])},
            scores={},
        ),
        golden=Golden(inputs=[{"a": 1.0, "b": 2.0}], outputs={"variable": [[0.0]]}, tolerance=1e-6),
        metrics={"holdout_rmse": 1.0},
        export={},
        mlflow_run_id="run",
        snapshot="snap",
        key_id="",
        compliance=compliance,
    )


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    home = tmp_path / "publisher"
    init_keys(home)
    return load_signer(home)


@pytest.fixture
def ring(signer: Signer) -> KeyRing:
    return KeyRing({signer.key_id: signer.private.public_key()})


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """Each bundle test runs on a local folder store and on the real S3-protocol server."""
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        server = request.getfixturevalue("s3_server")
        yield S3Store(server.bucket, server.settings(), prefix=f"bundles-{uuid.uuid4().hex}")


Publish = Callable[..., BuildResult]


@pytest.fixture
def publish(store: ObjectStore, signer: Signer, tmp_path: Path) -> Publish:
    """publish(version, seed=..., **manifest overrides) -> the published bundle."""

    def _publish(version: int = 1, seed: int = 0, **overrides: Any) -> BuildResult:
        folder = tmp_path / f"build-{version}-{seed}"
        files = write_model(folder, seed)
        return publish_bundle(store, signer, make_manifest(files, version, **overrides), folder)

    return _publish


@contextmanager
def local_ray() -> Iterator[None]:
    """The process's local Ray for a module that trains models (see ``shared_local_ray``)."""
    shared_local_ray()
    yield
