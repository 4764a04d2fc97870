"""Exact seqs of a read, compactly (issue #14 item 3): run-length ranges round-trip."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit_ledger.core.seq_ranges import describe, from_ranges, to_ranges
from audit_ledger.errors import FormatError


def test_runs_are_merged_and_singletons_kept() -> None:
    assert to_ranges([9, 3, 4, 5, 6, 7, 12, 13, 14, 4]) == [[3, 7], [9, 9], [12, 14]]
    assert to_ranges([]) == []
    assert describe([[3, 7], [9, 9], [12, 14]]) == "3-7, 9, 12-14"


@given(st.sets(st.integers(min_value=0, max_value=5000), max_size=300))
def test_round_trip_is_exact(seqs: set[int]) -> None:
    ranges = to_ranges(seqs)
    assert list(from_ranges(ranges)) == sorted(seqs)
    # Compact: adjacent ranges are always merged, so no two ranges touch.
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize(
    "bad",
    [[[5, 3]], [[1, 2], [3, 4]], [[4, 6], [1, 2]], [[1]], [[1, True]], [["1", 2]], [[-1, 2]]],
)
def test_malformed_ranges_are_refused(bad: list[list[object]]) -> None:
    with pytest.raises(FormatError):
        list(from_ranges(bad))  # type: ignore[arg-type]
