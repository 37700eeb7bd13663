"""BatchGroup: batches laid out as the store's tables, joined and filtered without losing a row's batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeml.telemetry.db.batch_group import BatchGroup
from edgeml.telemetry.db.writer import encode

from .batches import make_batch

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)


def group_of(count: int, at: datetime) -> BatchGroup:
    batches = [make_batch(f"d{i % 3}", rows=10 + i) for i in range(count)]
    return BatchGroup.of([(b, *encode(b)) for b in batches], at)


def rows_by_batch(group: BatchGroup, part: str) -> dict[str, list[tuple[object, ...]]]:
    """Each batch id's rows in one child table, found through ``seq``."""
    ids = dict(
        zip(
            group.batches.column("seq").to_pylist(), group.batches.column("batch_id").to_pylist(), strict=True
        )
    )
    table = group.tables()[part]
    found: dict[str, list[tuple[object, ...]]] = {}
    names = [n for n in table.column_names if n != "seq"]
    for row in table.to_pylist():
        found.setdefault(ids[row["seq"]], []).append(tuple(row[n] for n in names))
    return found


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4))
def test_joined_groups_number_their_batches_once_and_keep_each_rows_batch(sizes: list[int]) -> None:
    groups = [group_of(n, T0 + timedelta(seconds=i)) for i, n in enumerate(sizes)]
    joined = BatchGroup.joined(groups)
    assert len(joined) == sum(sizes)
    assert joined.batches.column("seq").to_pylist() == list(range(sum(sizes)))
    assert joined.ids() == [key for g in groups for key in g.ids()]
    assert joined.received_at == T0 + timedelta(seconds=len(sizes) - 1)
    assert set(joined.batches.column("received_at").to_pylist()) == {joined.received_at}
    for part in ("batch_features", "batch_scores", "batch_labels"):
        expected: dict[str, list[tuple[object, ...]]] = {}
        for g in groups:
            expected |= rows_by_batch(g, part)
        assert rows_by_batch(joined, part) == expected


def test_only_keeps_the_chosen_batches_and_their_rows() -> None:
    group = group_of(5, T0)
    kept = group.only([1, 3])
    assert kept.ids() == [group.ids()[1], group.ids()[3]]
    assert kept.batches.column("seq").to_pylist() == [1, 3]
    for part in ("batch_features", "batch_scores", "batch_labels"):
        wanted = {k: v for k, v in rows_by_batch(group, part).items() if k in {b for _, b in kept.ids()}}
        assert rows_by_batch(kept, part) == wanted
    assert kept.heads() == [group.heads()[1], group.heads()[3]]
