"""A feature task's memory does not grow with its bucket's rows (issue #23)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.features.test_build import SPEC, ingest

from edgeml.settings import load_settings
from edgeml.spec import parse_spec
from edgeml.validate import validate

_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from edgeml.features.build import build_features
    from edgeml.settings import load_settings
    from edgeml.spec import parse_spec
    path, home, chunk_rows = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    spec = parse_spec(path.read_text(), source=str(path), base_dir=path.parent)
    build_features(spec, load_settings({"EDGEML_HOME": home}), part_rows=20_000, chunk_rows=chunk_rows)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, from the forked test process
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024}))
    """
)


def _snapshot(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    """One machine (so one bucket holds every row), a reading every 10 s: 8,640 rows a lake part."""
    folder = tmp_path / f"r{rows}"
    folder.mkdir()
    spec_file = folder / "pumps.yaml"
    spec_file.write_text(SPEC, encoding="utf-8")
    spec = parse_spec(SPEC, source=str(spec_file), base_dir=folder)
    settings = load_settings({"EDGEML_HOME": str(folder / "home")})
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "ts": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(rows) * 10, "s"),
            "machine": "m1",
            "temp": rng.normal(50, 10, rows).round(2),
            "power": rng.normal(5, 1, rows).round(3),
        }
    )
    ingest(spec, settings, frame)
    validate(spec, settings)
    return spec_file, folder / "home"


def _peak_mb(snapshot: tuple[Path, Path], chunk_rows: int) -> float:
    """Peak RSS of a fresh process that builds the feature table (no Ray: the tasks run in it)."""
    spec, home = snapshot
    argv = [sys.executable, "-c", _CHILD, str(spec), str(home), str(chunk_rows)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


@pytest.mark.slow
def test_feature_memory_does_not_grow_with_the_rows_of_a_bucket(tmp_path: Path) -> None:
    few, many = _snapshot(tmp_path, 40_000), _snapshot(tmp_path, 400_000)
    # the allocators (Python's, Arrow's mimalloc) add 0 to ~35 MB of noise to one run's peak, and
    # only ever add: the lower of two runs is the working set
    small = min(_peak_mb(few, 20_000) for _ in range(2))
    large = min(_peak_mb(many, 20_000) for _ in range(2))
    whole = _peak_mb(many, 10**9)  # the same rows, the bucket computed whole (the old path)
    # 10x the rows: the whole bucket in memory costs ~+85 MB here; by key range, a range of 20,000 rows,
    # a part of 20,000 rows out and the windows' context stay what they were
    assert whole - small >= 60, (small, large, whole)
    assert large - small <= (whole - small) / 3, (small, large, whole)
