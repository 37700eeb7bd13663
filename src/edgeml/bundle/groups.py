"""The rows a version was trained for a device group on: what its per-group reference describes.

A retraining for groups (``pipeline run --since-snapshot S --group G``, which the central node
submits when G drifts) trains on the snapshot as it stands; the data that landed since ``S`` is
what G's devices see now, and ``S``'s rows are what every other group sees. ``bundle build``
signs both: the version's reference from ``S``'s rows and ``reference.groups[G]`` from the new
ones (rows of new lake parts that no dropped part holds), each counted on the bins of the
whole training snapshot (the agent bins on one set of edges whatever its group), so a group the
version was trained for is judged against its own conditions and returns to baseline once it
runs the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from edgeml.settings import Settings
from edgeml.spec.models import Spec
from edgeml.train.pipeline import InputLayout

__all__ = ["GroupRows", "rows_for_groups"]

#: rows a group's reference is drawn from, at most
GROUP_ROWS = 200_000


@dataclass(frozen=True)
class GroupRows:
    """Model inputs of the rows landed since ``since`` (the groups') and of ``since`` (the rest)."""

    groups: tuple[str, ...]
    since: str
    new: pd.DataFrame
    old: pd.DataFrame | None  # None: the old snapshot's features are gone

    def own(self, rows: pd.DataFrame, layout: InputLayout) -> pd.DataFrame:
        """Those of ``rows`` (model inputs as training takes them) equal in every input to a row
        landed since ``since``: the groups' own. A row whose window features differ from the landed
        rows' (computed over those alone) is missed, and so are rows beyond GROUP_ROWS landed."""
        from edgeml.train.data import model_inputs

        landed = set(_input_hashes(model_inputs(self.new, layout)))
        return rows[[h in landed for h in _input_hashes(rows[layout.columns])]]


def _landed_since(
    spec: Spec, settings: Settings, snapshot: str, since: str, layout: InputLayout
) -> pd.DataFrame:
    """Model inputs of the rows in ``snapshot`` that ``since`` lacks, window features computed over
    them as the feature stage computes them.

    Only parts that differ are read. A re-ingest can cut old rows into new parts (one part per date
    and block), so a row of a new part counts as landed only if no part ``since`` alone has holds it.
    """
    from edgeml.features.window import compute_batch
    from edgeml.ingest.lake import load_snapshot, read_parts
    from edgeml.privacy.access import record_read
    from edgeml.store import store_from_settings

    store = store_from_settings(settings)
    before = load_snapshot(store, spec.name, since).parts
    after = load_snapshot(store, spec.name, snapshot).parts
    kept = {p.key for p in before} & {p.key for p in after}
    added = [p for p in after if p.key not in kept]
    if not added:
        return pd.DataFrame(columns=layout.columns)
    gone = [p for p in before if p.key not in kept]
    record_read(store, spec, "lake", snapshot, len(added) + len(gone))
    table = read_parts(store, added, spec.schema_)
    if gone:
        seen = set(_row_hashes(read_parts(store, gone, spec.schema_)))
        table = table.filter(pa.array([h not in seen for h in _row_hashes(table)]))
    table = compute_batch(
        table, spec.features.window, entity=spec.schema_.entity, timestamp=spec.schema_.timestamp
    )
    rows: pd.DataFrame = table.select(layout.columns).to_pandas()
    return rows.sample(GROUP_ROWS, random_state=0) if len(rows) > GROUP_ROWS else rows


def _row_hashes(table: pa.Table) -> list[int]:
    """One hash per row over every column: equal rows, equal hashes."""
    return [int(h) for h in pd.util.hash_pandas_object(table.to_pandas(), index=False)]


def _input_hashes(frame: pd.DataFrame) -> list[int]:
    """One hash per row of model inputs, over their text (a missing value is None, whatever it was)."""
    text = frame.astype(object).where(frame.notna(), None).astype(str)
    return [int(h) for h in pd.util.hash_pandas_object(text, index=False)]


def rows_for_groups(
    spec: Spec,
    settings: Settings,
    snapshot: str,
    since: str | None,
    groups: Sequence[str],
    layout: InputLayout,
    old: pd.DataFrame | None,
) -> GroupRows | None:
    """The rows of a version trained on ``snapshot`` for ``groups`` with the data landed since
    ``since``; None when it was not (no groups, no ``since``, or nothing landed)."""
    if not groups or not since or since == snapshot:
        return None
    new = _landed_since(spec, settings, snapshot, since, layout)
    if new.empty:
        return None
    return GroupRows(tuple(sorted(set(groups))), since, new, old)
