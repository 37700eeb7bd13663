"""A version trained for groups: which of its holdout rows are those groups' own (NannyML's reference)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeml.bundle.groups import GroupRows
from edgeml.train.data import model_inputs
from edgeml.train.pipeline import InputLayout

LAYOUT = InputLayout(numeric=["temperature", "rpm"], categorical=["machine"], time=["ts"])


def _lake_rows(n: int, seed: int, machine: str) -> pd.DataFrame:
    """Rows as the lake gives them: integers, text with gaps, timestamps with a zone."""
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "temperature": pa.array(np.round(rng.normal(60, 5, n), 3)),
            "rpm": pa.array(rng.integers(900, 1500, n), pa.int64()),
            "machine": pa.array([None if i % 7 == 0 else f"{machine}-{i % 3}" for i in range(n)]),
            "ts": pa.array(1_767_571_200_000_000 + 30_000_000 * np.arange(n), pa.timestamp("us", tz="UTC")),
        }
    )
    return table.to_pandas()


def test_a_groups_own_rows_are_the_holdout_rows_landed_since_the_old_snapshot() -> None:
    landed, before = _lake_rows(300, 1, "pump-1"), _lake_rows(500, 2, "pump-0")
    landed.loc[5, "temperature"] = np.nan  # a missing value matches a missing value
    # the holdout as training takes it (model inputs: epoch seconds, floats, None for a gap), mixed
    mixed = pd.concat([before, landed], ignore_index=True)
    holdout = model_inputs(mixed, LAYOUT).sample(frac=1, random_state=0)
    rows = GroupRows(("line-b",), "snap-1", landed, before)
    own = rows.own(holdout, LAYOUT)
    assert len(own) == 300
    assert own.index.tolist() == [i for i in holdout.index if i >= 500]  # the landed ones, in holdout order
    assert own["temperature"].isna().sum() == 1
    # a row the group's data lacks is not the group's, even if it differs by one input alone
    nudged = holdout.assign(rpm=holdout["rpm"] + 1)
    assert rows.own(nudged, LAYOUT).empty
