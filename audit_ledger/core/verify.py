"""Streaming verification of the hash chain and Merkle tree (constant memory).

:class:`ChainVerifier` consumes ``(seq, leaf bytes)`` in log order. For each entry it checks the
leaf parses and re-encodes to the same bytes, ``seq`` is contiguous from 0, ``prev`` is the leaf
hash of the entry before, and ``recorded_at`` never decreases. It keeps only the previous leaf
hash, the last ``recorded_at`` and a :class:`CompactRange` (at most 64 hashes), so memory stays
flat however long the log is, and it can give the Merkle root at any size it has reached — which
is how stored checkpoints and stored subtree hashes are checked against the leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit_ledger.core.header import ZERO_HASH_HEX, LeafHeader, parse_leaf
from audit_ledger.core.merkle import CompactRange, leaf_hash
from audit_ledger.errors import ChainBrokenError, FormatError


@dataclass(frozen=True, slots=True)
class VerifiedLeaf:
    """What the verifier learned from one entry."""

    header: LeafHeader
    leaf_hash: bytes
    #: complete subtrees ``(level, index, hash)`` this leaf completed, to compare with storage
    subtrees: list[tuple[int, int, bytes]]


class ChainVerifier:
    """Replays a log in order; raises :class:`ChainBrokenError` at the first bad entry."""

    def __init__(self) -> None:
        self.tree = CompactRange()
        self._prev_hex = ZERO_HASH_HEX
        self._last_recorded: str | None = None

    @property
    def last_leaf_hex(self) -> str:
        """Hex leaf hash of the last entry (64 zeros before the first)."""
        return self._prev_hex

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
        expected = self.tree.size
        if seq != expected:
            reason = "missing entry (gap)" if seq > expected else "out of order or duplicated"
            raise ChainBrokenError(expected if seq > expected else seq, f"{reason}: got {seq}")
        try:
            header = parse_leaf(leaf)
        except FormatError as exc:
            raise ChainBrokenError(seq, f"leaf is not canonical format v1 ({exc})") from None
        if header.seq != seq:
            raise ChainBrokenError(seq, f"leaf says seq {header.seq}")
        if header.prev != self._prev_hex:
            raise ChainBrokenError(seq, "prev does not match the leaf hash of the entry before")
        # Canonical timestamps compare correctly as strings (fixed width, UTC).
        if self._last_recorded is not None and header.recorded_at < self._last_recorded:
            raise ChainBrokenError(seq, "recorded_at decreases")
        lh = leaf_hash(leaf)
        subtrees = self.tree.append(lh)
        self._prev_hex = lh.hex()
        self._last_recorded = header.recorded_at
        return VerifiedLeaf(header, lh, subtrees)
