"""fixed_size_chunks: every row once, in order, in chunks of a few fixed sizes only."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from faregate.store.chunks import SIZES, fixed_size_chunks


@given(st.lists(st.integers(), max_size=2_000))
def test_chunks_keep_every_row_in_order_and_use_only_the_fixed_sizes(rows: list[int]) -> None:
    chunks = list(fixed_size_chunks(rows))
    assert [r for chunk in chunks for r in chunk] == rows
    assert {len(c) for c in chunks} <= set(SIZES)


def test_any_batch_up_to_a_thousand_rows_needs_at_most_five_statement_shapes() -> None:
    shapes = {len(c) for n in range(1, 1_001) for c in fixed_size_chunks(range(n))}
    assert shapes == set(SIZES)
    assert [len(c) for c in fixed_size_chunks(range(341))] == [256, 64, 16, 4, 1]


def test_a_writer_slice_is_the_least_or_a_quarter_of_a_large_batch() -> None:
    from faregate.store.chunks import slice_size

    assert slice_size(100, 256) == 256
    assert slice_size(1024, 256) == 256
    assert slice_size(1025, 256) == 257  # never more than four calls
    assert slice_size(10_000, 256) == 2500
