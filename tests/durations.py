"""Seconds each test file took in a full run, so xdist hands out the longest files first.

With ``--dist loadfile`` on 2 workers a long file handed out last sets the wall time on its own:
xdist's default order (most tests first) gave 39.6 min where longest first gives 38.7, simulated on
the same run's figures. ``conftest.py`` orders the files by these figures, and the Makefile keeps
xdist from reordering them (``--no-loadscope-reorder``); a file missing here goes last.
Refresh after a full run with ``pytest --junitxml=run.xml`` then ``python tests/durations.py run.xml``.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

FILE = Path(__file__).with_name("durations.json")


def load() -> dict[str, float]:
    return dict(json.loads(FILE.read_text())) if FILE.is_file() else {}


def from_junit(report: Path) -> dict[str, float]:
    """Seconds per test file (``tests/x/test_y.py``) from a JUnit XML report."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        while parts and parts[-1][:1].isupper():  # test classes: the file is what is left
            parts.pop()
        seconds["/".join(parts) + ".py"] += float(case.get("time", 0))
    return {name: round(value) for name, value in sorted(seconds.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    FILE.write_text(json.dumps(from_junit(Path(sys.argv[1])), indent=1) + "\n")
