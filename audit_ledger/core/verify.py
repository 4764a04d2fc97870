"""Streaming verification of the hash chain and Merkle tree (constant memory).

Verification splits in two so that the expensive half can run on several cores:

* :class:`SegmentVerifier` checks a run of consecutive entries on its own: each leaf parses and
  re-encodes to the same bytes, ``seq`` is contiguous from the run's start, ``prev`` is the leaf
  hash of the entry before *inside the run*, and ``recorded_at`` never decreases inside it. What
  the first entry claims about the entry before the run (its ``prev`` and the ``recorded_at``
  it must not precede) is kept for whoever knows that entry.
* :class:`ChainVerifier` replays the whole log in order: it joins segments (checking exactly
  those claims at each seam) and grows a :class:`CompactRange` over the leaf hashes, so it can
  give the Merkle root at any size it has reached — which is how stored checkpoints and stored
  subtree hashes are checked against the leaves. It keeps the previous leaf hash, the last
  ``recorded_at`` and at most 64 hashes, so memory stays flat however long the log is.

Feeding one entry at a time through :meth:`ChainVerifier.add` is the same thing with segments of
one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit_ledger.core.header import ZERO_HASH_HEX, LeafHeader, check_leaf
from audit_ledger.core.merkle import CompactRange, leaf_hash
from audit_ledger.errors import ChainBrokenError, FormatError


@dataclass(frozen=True, slots=True)
class VerifiedLeaf:
    """What the verifier learned from one entry."""

    header: LeafHeader
    leaf_hash: bytes
    #: complete subtrees ``(level, index, hash)`` this leaf completed, to compare with storage
    subtrees: list[tuple[int, int, bytes]]


def _gap(expected: int, seq: int) -> ChainBrokenError:
    reason = "missing entry (gap)" if seq > expected else "out of order or duplicated"
    return ChainBrokenError(expected if seq > expected else seq, f"{reason}: got {seq}")


class SegmentVerifier:
    """Checks consecutive entries from ``start`` that need nothing from before the run.

    Raises :class:`ChainBrokenError` at the first bad entry; the entries before it stay counted.
    """

    __slots__ = ("first_prev", "first_recorded_at", "last_recorded_at", "leaf_hashes", "next_seq")

    def __init__(self, start: int) -> None:
        self.next_seq = start
        #: ``prev`` and ``recorded_at`` of the first entry: claims about the entry before.
        self.first_prev: str | None = None
        self.first_recorded_at: str | None = None
        self.last_recorded_at: str | None = None
        #: Leaf hashes of the entries checked so far, in order.
        self.leaf_hashes: list[bytes] = []

    def add(self, seq: int, leaf: bytes) -> tuple[dict[str, Any], bytes]:
        """Check one entry; return its header members (checked, as a plain dict: this runs
        for every entry of the log) and its leaf hash."""
        if seq != self.next_seq:
            raise _gap(self.next_seq, seq)
        try:
            header = check_leaf(leaf)
        except FormatError as exc:
            raise ChainBrokenError(seq, f"leaf is not canonical format v1 ({exc})") from None
        if header["seq"] != seq:
            raise ChainBrokenError(seq, f"leaf says seq {header['seq']}")
        recorded_at: str = header["recorded_at"]
        if self.leaf_hashes:
            if header["prev"] != self.leaf_hashes[-1].hex():
                raise ChainBrokenError(seq, "prev does not match the leaf hash of the entry before")
            # Canonical timestamps compare correctly as strings (fixed width, UTC).
            if recorded_at < (self.last_recorded_at or ""):
                raise ChainBrokenError(seq, "recorded_at decreases")
        else:
            self.first_prev = header["prev"]
            self.first_recorded_at = recorded_at
        lh = leaf_hash(leaf)
        self.leaf_hashes.append(lh)
        self.last_recorded_at = recorded_at
        self.next_seq = seq + 1
        return header, lh


class ChainVerifier:
    """Replays a log in order; raises :class:`ChainBrokenError` at the first bad entry."""

    def __init__(
        self,
        tree: CompactRange | None = None,
        last_leaf: bytes | None = None,
        last_recorded_at: str | None = None,
    ) -> None:
        """Start at the empty log, or resume after a verified prefix: its tree's right edge,
        the leaf hash and ``recorded_at`` of its last entry (an auditor's saved state)."""
        self.tree = tree.copy() if tree is not None else CompactRange()
        if (self.tree.size == 0) != (last_leaf is None) or (last_leaf is None) != (
            last_recorded_at is None
        ):
            raise FormatError("a resumed chain needs the last leaf hash and recorded_at")
        self._last_leaf = last_leaf
        self._last_recorded = last_recorded_at

    @property
    def last_leaf_hex(self) -> str:
        """Hex leaf hash of the last entry (64 zeros before the first)."""
        return self._last_leaf.hex() if self._last_leaf is not None else ZERO_HASH_HEX

    @property
    def last_recorded_at(self) -> str | None:
        return self._last_recorded

    @property
    def size(self) -> int:
        """Number of entries verified so far."""
        return self.tree.size

    def root(self) -> bytes:
        """Merkle root of the entries verified so far."""
        return self.tree.root()

    def add(self, seq: int, leaf: bytes) -> VerifiedLeaf:
        """Verify the next entry of the log."""
        segment = SegmentVerifier(self.size)
        members, lh = segment.add(seq, leaf)
        self.check_seam(segment.first_prev, segment.first_recorded_at)
        subtrees = self.append(lh)
        self.end_segment(segment.last_recorded_at)
        return VerifiedLeaf(LeafHeader(**members), lh, subtrees)

    def check_seam(self, first_prev: str | None, first_recorded_at: str | None) -> None:
        """Check what the first entry of a segment starting at :attr:`size` claims about the
        entry before it (``None``: the segment is empty)."""
        if first_prev is None or first_recorded_at is None:
            return
        if first_prev != self.last_leaf_hex:
            raise ChainBrokenError(
                self.size, "prev does not match the leaf hash of the entry before"
            )
        if self._last_recorded is not None and first_recorded_at < self._last_recorded:
            raise ChainBrokenError(self.size, "recorded_at decreases")

    def append(self, leaf_hash_: bytes) -> list[tuple[int, int, bytes]]:
        """Grow the tree by the next leaf of a segment whose seam was checked; return the
        subtrees it completes."""
        self._last_leaf = leaf_hash_
        return self.tree.append(leaf_hash_)

    def end_segment(self, last_recorded_at: str | None) -> None:
        """Record the segment's last ``recorded_at``, which the next seam must not precede."""
        if last_recorded_at is not None:
            self._last_recorded = last_recorded_at
