"""Sets of seqs written compactly: sorted, merged, inclusive run-length ranges ``[[a, b], ...]``.

A ``records_read`` operation names exactly the seqs a read returned (issue #14 item 3), not the
first and last of them: a page of 1,000 consecutive entries is ``[[a, a + 999]]``, a filtered
page of scattered ones a range per run. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from audit_ledger.errors import FormatError


def to_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """``seqs`` (any order, repeats allowed) as sorted, disjoint, non-adjacent inclusive ranges."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def from_ranges(ranges: Sequence[Sequence[int]]) -> Iterator[int]:
    """The seqs of :func:`to_ranges`' output, ascending; a malformed list is a FormatError."""
    last = -2
    for item in ranges:
        if (
            len(item) != 2  # a range is a pair
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in item)
            or not last + 1 < item[0] <= item[1]
        ):
            raise FormatError("seq ranges must be sorted, disjoint [first, last] pairs")
        yield from range(item[0], item[1] + 1)
        last = item[1]


def describe(ranges: Sequence[Sequence[int]]) -> str:
    """Human form for pages: ``3-7, 9, 12-14``."""
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)
