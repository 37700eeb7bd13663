"""Fixtures that build real snapshots: a spec parsed from YAML, a DataFrame landed in the lake.

Landing goes through ``land_batch`` (the Ray task body, which runs fine without Ray), then the
catalog records the parts and takes a snapshot, exactly as ``edgeml ingest`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from edgeml.ingest.lake import Part, Snapshot, record_source_parts, take_snapshot
from edgeml.ingest.run import land_batch
from edgeml.settings import Settings
from edgeml.spec import Spec
from edgeml.spec.loader import parse_spec
from edgeml.store import ObjectStore, store_from_settings

SPEC_HEAD = """\
version: 1
name: pumps
sources:
  - {name: history, kind: file, path: history.csv}
  - {name: live, kind: file, path: live.csv}
schema:
  timestamp: ts
  entity: machine
  columns:
    ts: {type: timestamp, nullable: false}
    machine: {type: string, nullable: false}
    temp: {type: float}
    code: {type: string}
    power: {type: float}
target: power
task: regression
search: {families: [linear]}
"""


def spec_text(expectations: str = "", features: str = "") -> str:
    """The pumps spec with the given ``expectations:`` and ``features:`` bodies (YAML, indented)."""
    text = SPEC_HEAD
    if expectations:
        text += "expectations:\n" + expectations
    if features:
        text += "features:\n" + features
    return text


@dataclass
class Lake:
    """The lake of one appliance home, fed from DataFrames."""

    settings: Settings

    @property
    def store(self) -> ObjectStore:
        return store_from_settings(self.settings)

    def land(
        self, spec: Spec, frame: pd.DataFrame, source: str = "history", *, append: bool = False
    ) -> list[Part]:
        """Land ``frame`` as (part of) ``source`` and record it in the catalog; no snapshot yet."""
        meta = land_batch(
            frame,
            schema=spec.schema_,
            dataset=spec.name,
            source=source,
            timestamp=spec.schema_.timestamp,
            store_url=self.settings.store_url,
            s3=self.settings.store.s3,
        )
        parts = [
            Part(str(r.key), str(r.sha256), int(r.rows), int(r.bytes), source, str(r.date))
            for r in meta.itertuples(index=False)
            if r.kind == "clean"
        ]
        record_source_parts(self.store, spec.name, source, parts, append=append)
        return parts

    def snapshot(self, spec: Spec) -> Snapshot:
        return take_snapshot(self.store, spec)

    def ingest(self, spec: Spec, frame: pd.DataFrame) -> Snapshot:
        """Land ``frame`` as the whole of source ``history`` and take a snapshot."""
        self.land(spec, frame)
        return self.snapshot(spec)


@pytest.fixture
def lake(settings: Settings) -> Lake:
    return Lake(settings)


SpecFactory = Callable[..., Spec]


@pytest.fixture
def make_spec(tmp_path: Path) -> SpecFactory:
    """Write the pumps spec (with extra expectations / features) to a file and parse it."""

    def make(expectations: str = "", features: str = "") -> Spec:  # the file is tmp_path/pumps.yaml
        text = spec_text(expectations, features)
        path = tmp_path / "pumps.yaml"
        path.write_text(text, encoding="utf-8")
        return parse_spec(text, source=str(path), base_dir=tmp_path)

    return make
