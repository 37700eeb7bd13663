"""Bytes a bundle update moves: content-addressed blobs against shipping the whole bundle.

Target (issue #6): a new version whose only change is the weights uploads and downloads
only the changed blobs. Measured in ONE run on real models:

1. simulated pump readings are landed as CSV and ingested with ``examples/pump-faults.yaml``;
2. its MLP family is trained twice with a fixed architecture and different seeds: the two
   versions differ in their weights only;
3. both are bundled for x86-64-generic (graph and weights are separate blobs) and fetched
   by a device whose blob cache holds the first; then the second is bundled again (a
   re-signature with a new expiry) and fetched again.

The peer is what a device moves when each version ships as one archive: every byte of
every file, every time.

    .venv/bin/python -m bench.bundle_delta [--no-write-results]
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from bench.common import Report, Table, parser, smoke_sizes, verdict

PROFILE = "x86-64-generic"
FIXED_MLP = {
    "hidden_units": {"choices": [128]},
    "layers": {"choices": [2]},
    "learning_rate": {"choices": [0.003]},
    "epochs": {"choices": [15]},
    "dropout": {"choices": [0.0]},
    "weight_decay": {"choices": [0.0001]},
}


def main() -> None:
    args = parser(__doc__).parse_args()
    args.readings, args.mlp = 1_500, FIXED_MLP
    smoke_mlp = {**FIXED_MLP, "hidden_units": {"choices": [16]}, "epochs": {"choices": [1]}}
    smoke_sizes(args, readings=800, mlp=smoke_mlp)  # 6 pumps × 800: every fault class shows

    from bench.common import (
        KeyRing,
        ParamRange,
        SensorSimulation,
        build_bundle,
        build_features,
        example_spec,
        fetch_bundle,
        ingest,
        init_keys,
        load_settings,
        load_signer,
        ray_session,
        simulate_sensors,
        store_from_settings,
        train,
        validate,
        write_csv,
    )

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    report = Report(
        "bundle_delta", "Bundle updates: bytes moved", args, ("edgeml", "onnx", "onnxruntime", "cryptography")
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"EDGEML_HOME": tmp})
        landing = Path(tmp) / "landing"
        landing.mkdir()
        with (landing / "pumps.csv").open("w", encoding="utf-8", newline="") as out:
            write_csv(simulate_sensors(SensorSimulation(machines=6, readings=args.readings, seed=0)), out)
        history = {"name": "history", "kind": "file", "path": str(landing / "*.csv"), "format": "csv"}
        spec = example_spec("pump-faults", sources=[history])
        init_keys(settings.home)
        space = {"mlp": {k: ParamRange.model_validate(v) for k, v in args.mlp.items()}}
        versions = []
        with ray_session(settings.ray_address, progress_bars=False):
            snapshot = ingest(spec, settings, progress_bars=False).snapshot.id  # as `edgeml run` does:
            validate(spec, settings, snapshot)  # ingest, validate, build features, then train
            build_features(spec, settings, snapshot)
            for seed in (1, 2):
                search = spec.search.model_copy(
                    update={
                        "families": ["mlp"],
                        "space": space,
                        "trials": 1,
                        "seed": seed,
                        "scheduler": "fifo",
                    }
                )
                quick = spec.model_copy(
                    update={"search": search, "gates": spec.gates.model_copy(update={"thresholds": {}})}
                )
                versions.append(train(quick, settings, snapshot).version)
        store, signer = store_from_settings(settings), load_signer(settings.home)
        ring = KeyRing.from_home(settings.home)
        staging = Path(tmp) / "device"
        old, new = (
            build_bundle(f"models:/{spec.name}/{v}", PROFILE, settings, store, signer) for v in versions
        )
        fetch_bundle(store, old.key, ring, staging)
        fetched = fetch_bundle(store, new.key, ring, staging)
        resigned = build_bundle(f"models:/{spec.name}/{versions[1]}", PROFILE, settings, store, signer)
        refetched = fetch_bundle(store, resigned.key, ring, staging)
    report.measured()

    full = sum(f.size for f in new.manifest.files)
    files = ", ".join(f"{f.path} {f.size:,} B" for f in new.manifest.files)
    moved_up, moved_down = new.uploaded_bytes, fetched.downloaded_bytes
    changed = sum(
        f.size for f in new.manifest.files if f.sha256 not in {o.sha256 for o in old.manifest.files}
    )
    change = f"v{versions[0]} → v{versions[1]}"
    rows = [
        [f"weights-only change ({change}): upload", f"{moved_up:,}", f"{full:,}", f"{moved_up / full:.3f}x"],
        [
            f"weights-only change ({change}): device download",
            f"{moved_down:,}",
            f"{full:,}",
            f"{moved_down / full:.3f}x",
        ],
        [
            f"re-signed v{versions[1]} (new expiry): upload",
            f"{resigned.uploaded_bytes:,}",
            f"{full:,}",
            f"{resigned.uploaded_bytes / full:.3f}x",
        ],
        [
            f"re-signed v{versions[1]}: device download",
            f"{refetched.downloaded_bytes:,}",
            f"{full:,}",
            f"{refetched.downloaded_bytes / full:.3f}x",
        ],
    ]
    headers = ["update", "edgeml bytes", "whole-bundle bytes (peer)", "ratio"]
    checks = [
        [
            "weights-only change moves only the changed blobs",
            f"{moved_up:,} up / {moved_down:,} down",
            f"= {changed:,} (changed blobs) < {full:,}",
            "PASS" if moved_up == moved_down == changed < full else "FAIL",
        ],
        [
            "an unchanged model moves nothing",
            f"{refetched.downloaded_bytes:,}",
            "0",
            verdict(-refetched.downloaded_bytes, 0),
        ],
    ]
    mlp = f"{args.mlp['layers']['choices'][0]} x {args.mlp['hidden_units']['choices'][0]} hidden units"
    inputs = f"pump-faults MLP ({mlp}) v{versions[0]} and v{versions[1]}, {PROFILE}: {files}"
    report.publish(
        [
            f"Input: {inputs}. The peer ships each version as one archive of its files.",
            Table(headers, rows),
            report.checks(checks),
        ]
    )


if __name__ == "__main__":
    main()
