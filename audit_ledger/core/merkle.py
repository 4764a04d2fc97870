"""Merkle tree hashing and proofs per RFC 9162 §2.1 (identical to RFC 6962 §2.1).

Storage model (as in Go's ``sumdb/tlog``): every *complete* subtree — the ``2**level`` leaves
starting at ``index * 2**level`` — has its hash stored once, addressed by ``(level, index)``;
level 0 holds the leaf hashes. A log of ``n`` leaves stores fewer than ``2n`` hashes, written
append-only as the tree grows (:class:`CompactRange` yields them).

Any RFC subtree ``D[a:b]`` that occurs in a proof decomposes into at most ``log2(n)`` complete
subtrees (the binary digits of ``b - a``), so the tree head, an inclusion proof and a
consistency proof each need ``O(log n)`` stored hashes. They are requested in a single call to the
:data:`HashReader` so that a database answers them in one round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from audit_ledger.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = SHA-256()

#: Reads stored complete-subtree hashes: ``[(level, index), ...] -> [hash, ...]`` in order.
HashReader = Callable[[Sequence[tuple[int, int]]], Sequence[bytes]]


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- reference definitions (naive, used by tests and as documentation) -----------------------


def reference_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) straight from the RFC's recursive definition, over leaf hashes."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(reference_root(leaf_hashes[:k]), reference_root(leaf_hashes[k:]))


# --- proof shapes: which subtrees D[a:b] a proof contains, in RFC order ------------------------


def _inclusion_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]) as a list of subtree ranges, leaf-side first."""
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if m - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    ranges.reverse()
    return ranges


def _consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], true) as subtree ranges, in RFC order."""
    ranges: list[tuple[int, int]] = []
    lo, hi, complete = 0, n, True
    while True:
        size = hi - lo
        if m - lo == size:
            if not complete:
                ranges.append((lo, hi))
            break
        k = _split(size)
        if m - lo <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, complete = lo + k, False
    ranges.reverse()
    return ranges


def subtree_indexes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The complete subtrees ``(level, index)`` that make up RFC subtree D[lo:hi], left first.

    For the ranges that occur in RFC 9162 trees, ``lo`` is a multiple of a power of two at least
    ``hi - lo``, so the greedy split gives the binary digits of ``hi - lo`` in decreasing order.
    """
    out: list[tuple[int, int]] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        while lo & ((1 << level) - 1):
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a subtree from its complete parts (left first): right-leaning fold, per RFC."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _resolve(ranges: Sequence[tuple[int, int]], read: HashReader) -> list[bytes]:
    """Read every complete subtree needed for ``ranges`` in one call and fold each range."""
    parts = [subtree_indexes(lo, hi) for lo, hi in ranges]
    flat = [idx for part in parts for idx in part]
    hashes = list(read(flat)) if flat else []
    if len(hashes) != len(flat) or any(len(h) != HASH_SIZE for h in hashes):
        raise ProofError("hash reader returned the wrong number or size of hashes")
    out: list[bytes] = []
    pos = 0
    for part in parts:
        out.append(_fold(hashes[pos : pos + len(part)]))
        pos += len(part)
    return out


def tree_root(n: int, read: HashReader) -> bytes:
    """MTH(D[n]) from at most log2(n)+1 stored hashes."""
    if n < 0:
        raise ProofError("tree size must not be negative")
    if n == 0:
        return EMPTY_ROOT
    return _resolve([(0, n)], read)[0]


def inclusion_proof(m: int, n: int, read: HashReader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof of leaf ``m`` in the tree of size ``n``."""
    if not 0 <= m < n:
        raise ProofError(f"need 0 <= index < tree size, got index {m}, size {n}")
    return _resolve(_inclusion_ranges(m, n), read)


def consistency_proof(m: int, n: int, read: HashReader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between tree sizes ``m`` and ``n``."""
    if not 1 <= m <= n:
        raise ProofError(f"need 1 <= first <= second, got {m}, {n}")
    if m == n:
        return []
    return _resolve(_consistency_ranges(m, n), read)


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------


def root_from_inclusion_proof(m: int, n: int, leaf_hash_: bytes, proof: Sequence[bytes]) -> bytes:
    """Root implied by an inclusion proof (RFC 9162 §2.1.3.2), or :class:`ProofError`."""
    if not 0 <= m < n:
        raise ProofError("leaf index out of range")
    if len(leaf_hash_) != HASH_SIZE:
        raise ProofError("leaf hash must be 32 bytes")
    fn, sn, r = m, n - 1, leaf_hash_
    for p in proof:
        if len(p) != HASH_SIZE or sn == 0:
            raise ProofError("inclusion proof is malformed")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof has the wrong length")
    return r


def verify_inclusion(
    m: int, n: int, leaf_hash_: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` puts leaf ``m`` in tree ``root`` of size n."""
    if root_from_inclusion_proof(m, n, leaf_hash_, proof) != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    m: int, n: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: raise :class:`ProofError` unless tree ``m`` is a prefix of tree ``n``."""
    if not 1 <= m <= n:
        raise ProofError("tree sizes out of order")
    if m == n:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("equal tree sizes with different roots")
        return
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("consistency proof is malformed")
    path = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: its root is the first node implicitly
        path.insert(0, first_root)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise ProofError("consistency proof does not verify")


# --- incremental tree state -------------------------------------------------------------------


@dataclass
class CompactRange:
    """The right edge of a growing tree: hashes of its maximal complete subtrees, largest first.

    Appending a leaf returns the newly completed subtrees to store; :meth:`root` gives MTH of the
    whole tree. Its state is at most 64 hashes, so a log's head row can hold it and an append
    needs no reads of older hashes.
    """

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (
            self.size < 0
            or len(self.hashes) != self.size.bit_count()
            or any(len(h) != HASH_SIZE for h in self.hashes)
        ):
            raise ProofError("compact range does not match its size")

    def append(self, leaf_hash_: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return every ``(level, index, hash)`` completed by it."""
        index = self.size
        new = [(0, index, leaf_hash_)]
        h, level = leaf_hash_, 0
        while (index >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            new.append((level, index >> level, h))
        self.hashes.append(h)
        self.size += 1
        return new

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append several leaf hashes; return all subtrees they complete."""
        out: list[tuple[int, int, bytes]] = []
        for lh in leaf_hashes:
            out.extend(self.append(lh))
        return out

    def root(self) -> bytes:
        """MTH of the tree so far."""
        if not self.hashes:
            return EMPTY_ROOT
        return _fold(self.hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self.hashes))

    def to_bytes(self) -> bytes:
        """Concatenated hashes (the size is stored beside them)."""
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, blob: bytes) -> CompactRange:
        if len(blob) != HASH_SIZE * size.bit_count():
            raise ProofError("stored compact range has the wrong length")
        return cls(size, [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)])

    @classmethod
    def from_reader(cls, size: int, read: HashReader) -> CompactRange:
        """Rebuild the right edge of tree ``size`` from stored hashes (log2(size) reads)."""
        idx = subtree_indexes(0, size)
        return cls(size, list(read(idx)) if idx else [])
