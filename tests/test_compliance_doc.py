"""docs/compliance.md maps each guarantee to its test: every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_compliance_page_names_exists() -> None:
    text = (ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
    table = text.split("## Guarantees and their tests", 1)[1].split("### Not enforced yet", 1)[0]
    named = 0
    for row in [line for line in table.splitlines() if line.startswith("| ")][1:]:
        path = None
        for ref in re.findall(r"`([^`]+)`", row.split("|")[-2]):
            file, _, name = ref.partition("::")
            path = ROOT / file if file else path
            assert path is not None, row
            assert path.is_file(), f"{file} does not exist"
            if name:  # a parametrized case, `test_x[hipaa]`: its id must be in the source too
                test, _, case = name.partition("[")
                source = path.read_text(encoding="utf-8")
                assert f"def {test}(" in source, f"{ref}: no such test"
                assert case.rstrip("]") in source, f"{ref}: no such case"
            named += 1
    assert named >= 15
