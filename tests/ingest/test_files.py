"""Locating a file source's files: store globs behave like local globs."""

from __future__ import annotations

import pytest

from edgeml.ingest.files import glob_regex


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("landing/*.csv", "landing/a.csv", True),
        ("landing/*.csv", "landing/sub/a.csv", False),  # `*` stays within a folder, as on disk
        ("landing/**/*.csv", "landing/sub/deeper/a.csv", True),
        ("landing/**/*.csv", "landing/a.csv", True),
        ("landing/day-?.csv", "landing/day-1.csv", True),
        ("landing/day-?.csv", "landing/day-10.csv", False),
        ("landing/day-[12].csv", "landing/day-2.csv", True),
        ("landing/day-[!12].csv", "landing/day-3.csv", True),
        ("landing/day-[!12].csv", "landing/day-1.csv", False),
        ("landing/a+b.csv", "landing/a+b.csv", True),
    ],
)
def test_store_globs_mean_what_local_globs_mean(pattern: str, key: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(key)) is matches
