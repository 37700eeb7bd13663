"""Univariate drift with one code path for the live monitor and ``edgeml drift run``.

:mod:`.reference` builds the statistics a bundle signs (bins and a band per input, from
the reference's own chunks, as NannyML fits them), :mod:`.methods` holds the distances,
:mod:`.judge` judges one chunk's counts, and :mod:`.run` backtests on files.
"""

from edgeml.drift.judge import Verdict, judge
from edgeml.drift.methods import DEFAULT_CATEGORICAL, DEFAULT_CONTINUOUS, Method
from edgeml.drift.reference import build_reference, column_kind

__all__ = [
    "DEFAULT_CATEGORICAL",
    "DEFAULT_CONTINUOUS",
    "Method",
    "Verdict",
    "build_reference",
    "column_kind",
    "judge",
]
