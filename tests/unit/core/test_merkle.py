"""RFC 9162 §2.1 Merkle tree hashing and proofs (audit_ledger.core.merkle).

Known-answer vectors are the RFC 6962 reference data (the eight Certificate Transparency test
leaves) as used by Go's transparency-dev/merkle, ``proof/verify_test.go`` (``leaves``, ``roots``,
``inclusionProofs``, ``consistencyProofs``; that file numbers leaves from 1, here they are 0-based)
and certificate-transparency-go's ``merkletree`` tests. The property tests compare the O(log n)
stored-hash path with a naive implementation written here straight from RFC 9162 §2.1.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    reference_root,
    root_from_inclusion_proof,
    subtree_indexes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from audit_ledger.errors import ProofError

# --- RFC 6962 reference data (transparency-dev/merkle proof/verify_test.go) --------------------

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_LEAF_HASHES = [leaf_hash(d) for d in CT_LEAVES]

# Root of the tree of the first n reference leaves, n = 0..8.
CT_ROOTS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

# (leaf index, tree size, proof): inclusionProofs with the leaf number made 0-based.
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (first size, second size, proof): consistencyProofs.
CT_CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _root(n: int) -> bytes:
    return bytes.fromhex(CT_ROOTS[n])


def _hashes(hexes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# --- a naive model straight from RFC 9162 §2.1, over the list of leaf hashes -------------------


def _split(n: int) -> int:
    """RFC 9162 §2.1.1: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Tree:
    """A log of leaf hashes with its stored complete subtrees and a naive RFC model."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.leaves = list(leaf_hashes)
        self.stored: dict[tuple[int, int], bytes] = {}
        self.compact = CompactRange()
        for lh in self.leaves:
            for level, index, h in self.compact.append(lh):
                assert (level, index) not in self.stored, "a subtree was emitted twice"
                self.stored[(level, index)] = h
        self.calls: list[list[tuple[int, int]]] = []
        self._mth: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return len(self.leaves)

    def read(self, indexes: Sequence[tuple[int, int]]) -> list[bytes]:
        """The HashReader: records every call."""
        self.calls.append(list(indexes))
        return [self.stored[i] for i in indexes]

    def reads(self) -> int:
        return sum(len(c) for c in self.calls)

    # RFC 9162 §2.1.1 MTH(D[lo:hi]) (memoised: the proofs ask for the same subtrees repeatedly)
    def mth(self, lo: int, hi: int) -> bytes:
        key = (lo, hi)
        if key not in self._mth:
            n = hi - lo
            if n == 0:
                value = hashlib.sha256(b"").digest()
            elif n == 1:
                value = self.leaves[lo]
            else:
                k = _split(n)
                value = hashlib.sha256(
                    b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi)
                ).digest()
            self._mth[key] = value
        return self._mth[key]

    # RFC 9162 §2.1.3.1 PATH(m, D[lo:hi])
    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    # RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true)
    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


def _log_bound(n: int) -> int:
    """The O(log n) claim: at most 2*ceil(log2 n) + 2 stored hashes per proof."""
    return 2 * (n - 1).bit_length() + 2


def _flip(h: bytes, pos: int, delta: int = 1) -> bytes:
    out = bytearray(h)
    out[pos % len(out)] ^= delta or 1
    return bytes(out)


def _inclusion_ok(m: int, n: int, lh: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    try:
        verify_inclusion(m, n, lh, proof, root)
    except ProofError:
        return False
    return True


def _consistency_ok(m: int, n: int, r1: bytes, r2: bytes, proof: Sequence[bytes]) -> bool:
    try:
        verify_consistency(m, n, r1, r2, proof)
    except ProofError:
        return False
    return True


def _inclusion_probes(
    m: int, n: int, proof: list[bytes], root: bytes, lh: bytes
) -> list[tuple[str, int, int, bytes, list[bytes], bytes]]:
    """Port of Go's corruptInclusionProof (transparency-dev/merkle proof/verify_test.go)."""
    probes = [
        ("index - 1", m - 1, n, lh, proof, root),
        ("index + 1", m + 1, n, lh, proof, root),
        ("index ^ 2", m ^ 2, n, lh, proof, root),
        ("size * 2", m, n * 2, lh, proof, root),
        ("size / 2", m, n // 2, lh, proof, root),
        ("wrong leaf", m, n, b"WrongLeaf", proof, root),
        ("empty root", m, n, lh, proof, EMPTY_ROOT),
        ("random root", m, n, lh, proof, SOME_HASH),
        ("trailing garbage", m, n, lh, [*proof, b""], root),
        ("trailing root", m, n, lh, [*proof, root], root),
        ("preceding garbage", m, n, lh, [b"", *proof], root),
        ("preceding root", m, n, lh, [root, *proof], root),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 0, 8)
        probes.append((f"modified proof[{i}]", m, n, lh, wrong, root))
    if proof:
        probes.append(("removed component", m, n, lh, proof[:-1], root))
    if len(proof) > 1:
        probes.append(("inserted component", m, n, lh, [proof[0], SOME_HASH, *proof[1:]], root))
    return probes


def _consistency_probes(
    m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """Port of Go's corruptConsistencyProof (transparency-dev/merkle proof/verify_test.go)."""
    probes = [
        ("size1 - 1", m - 1, n, r1, r2, proof),
        ("size1 + 1", m + 1, n, r1, r2, proof),
        ("size1 ^ 2", m ^ 2, n, r1, r2, proof),
        ("size2 * 2", m, n * 2, r1, r2, proof),
        ("size2 / 2", m, n // 2, r1, r2, proof),
        ("wrong root1", m, n, b"WrongRoot", r2, proof),
        ("wrong root2", m, n, r1, b"WrongRoot", proof),
        ("swapped roots", m, n, r2, r1, proof),
        ("empty proof", m, n, r1, r2, []),
        ("trailing garbage", m, n, r1, r2, [*proof, b""]),
        ("trailing root1", m, n, r1, r2, [*proof, r1]),
        ("trailing root2", m, n, r1, r2, [*proof, r2]),
        ("preceding garbage", m, n, r1, r2, [b"", *proof]),
        ("preceding root1", m, n, r1, r2, [r1, *proof]),
        ("preceding root2", m, n, r1, r2, [r2, *proof]),
        ("preceding proof[0]", m, n, r1, r2, [proof[0], *proof]),
        ("truncated proof", m, n, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 0, 16)
        probes.append((f"modified proof[{i}]", m, n, r1, r2, wrong))
    return probes


# --- known answers ------------------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert _root(0) == EMPTY_ROOT
    assert reference_root([]) == _root(0)
    assert tree_root(0, Tree([]).read) == _root(0)
    assert CompactRange().root() == _root(0)


def test_leaf_and_node_hash_domain_separation() -> None:
    assert leaf_hash(b"") == _root(1)
    assert leaf_hash(b"\x00") == bytes.fromhex(
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
    )
    assert node_hash(CT_LEAF_HASHES[0], CT_LEAF_HASHES[1]) == _root(2)
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


@pytest.mark.parametrize("n", range(9))
def test_known_roots(n: int) -> None:
    tree = Tree(CT_LEAF_HASHES[:n])
    assert reference_root(CT_LEAF_HASHES[:n]) == _root(n)
    assert tree.compact.root() == _root(n)
    assert tree_root(n, tree.read) == _root(n)
    assert tree.mth(0, n) == _root(n)


def test_full_reference_tree_root() -> None:
    assert reference_root(CT_LEAF_HASHES).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


def test_stored_prefix_roots_from_the_full_tree() -> None:
    # Complete subtrees never change as the log grows, so the store of the 8-leaf tree
    # answers every earlier tree head.
    tree = Tree(CT_LEAF_HASHES)
    for n in range(9):
        assert tree_root(n, tree.read) == _root(n)


@pytest.mark.parametrize(("m", "n", "expected"), CT_INCLUSION)
def test_known_inclusion_proofs(m: int, n: int, expected: list[str]) -> None:
    tree = Tree(CT_LEAF_HASHES)
    proof = inclusion_proof(m, n, tree.read)
    assert proof == _hashes(expected)
    assert tree.path(m, 0, n) == proof
    assert root_from_inclusion_proof(m, n, CT_LEAF_HASHES[m], proof) == _root(n)
    verify_inclusion(m, n, CT_LEAF_HASHES[m], proof, _root(n))
    for desc, *args in _inclusion_probes(m, n, proof, _root(n), CT_LEAF_HASHES[m]):
        assert not _inclusion_ok(*args), desc  # type: ignore[arg-type]


@pytest.mark.parametrize(("m", "n", "expected"), CT_CONSISTENCY)
def test_known_consistency_proofs(m: int, n: int, expected: list[str]) -> None:
    tree = Tree(CT_LEAF_HASHES)
    proof = consistency_proof(m, n, tree.read)
    assert proof == _hashes(expected)
    assert tree.subproof(m, 0, n, True) == proof
    verify_consistency(m, n, _root(m), _root(n), proof)
    for desc, *args in _consistency_probes(m, n, _root(m), _root(n), proof):
        assert not _consistency_ok(*args), desc  # type: ignore[arg-type]


def test_known_trivial_proofs() -> None:
    tree = Tree(CT_LEAF_HASHES)
    assert inclusion_proof(0, 1, tree.read) == []
    verify_inclusion(0, 1, CT_LEAF_HASHES[0], [], _root(1))
    for n in range(1, 9):
        assert consistency_proof(n, n, tree.read) == []
        verify_consistency(n, n, _root(n), _root(n), [])


def test_single_entry_inclusion_go_table() -> None:
    # TestVerifyInclusionSingleEntry: root and leaf hash of a 1-entry tree are the same.
    h = leaf_hash(b"data")
    verify_inclusion(0, 1, h, [], h)
    for leaf, root in [(h, b""), (b"", h), (b"", b"")]:  # the last: wrong hash size
        with pytest.raises(ProofError):
            verify_inclusion(0, 1, leaf, [], root)


@pytest.mark.parametrize(("m", "n"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_go_bad_probes(m: int, n: int) -> None:
    # TestVerifyInclusion's probes with an empty proof and mismatched or empty hashes.
    for lh, root in [(SOME_HASH, b""), (b"", EMPTY_ROOT), (SOME_HASH, EMPTY_ROOT)]:
        with pytest.raises(ProofError):
            verify_inclusion(m, n, lh, [], root)


def test_consistency_go_table() -> None:
    # TestVerifyConsistency, rows with size1 >= 1 (size 0 is refused here by design:
    # DESIGN §3 makes no checkpoint for an empty log, so there is nothing to be consistent with).
    r1, r2 = b"don't care 1", b"don't care 2"
    verify_consistency(1, 1, r2, r2, [])
    for m, n, a, b, proof in [
        (1, 1, r1, r2, []),  # equal sizes, different roots
        (2, 1, r1, r2, []),  # time travel
        (1, 2, r1, r2, []),  # empty proof
        (1, 1, EMPTY_ROOT, r2, []),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # roots match, proof not empty
    ]:
        with pytest.raises(ProofError):
            verify_consistency(m, n, a, b, proof)
    with pytest.raises(ProofError):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        consistency_proof(0, 3, Tree(CT_LEAF_HASHES).read)


# --- exhaustive small trees ---------------------------------------------------------------------


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def test_all_proofs_in_small_trees() -> None:
    tree = Tree(_leaves(40))
    for n in range(1, 41):
        root = tree.mth(0, n)
        assert tree_root(n, tree.read) == root
        assert reference_root(tree.leaves[:n]) == root
        for m in range(n):
            proof = inclusion_proof(m, n, tree.read)
            assert proof == tree.path(m, 0, n), (m, n)
            verify_inclusion(m, n, tree.leaves[m], proof, root)
            for other in range(n):  # a proof for one index never proves another
                if other != m:
                    assert not _inclusion_ok(other, n, tree.leaves[m], proof, root)
            for desc, *args in _inclusion_probes(m, n, proof, root, tree.leaves[m]):
                assert not _inclusion_ok(*args), (desc, m, n)  # type: ignore[arg-type]
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, tree.read)
            assert proof == tree.subproof(m, 0, n, True), (m, n)
            first = tree.mth(0, m)
            verify_consistency(m, n, first, root, proof)
            if m < n:
                for desc, *args in _consistency_probes(m, n, first, root, proof):
                    assert not _consistency_ok(*args), (desc, m, n)  # type: ignore[arg-type]


def test_stored_subtrees_are_the_complete_subtrees() -> None:
    for n in (1, 2, 3, 7, 8, 9, 100, 255, 256, 257):
        tree = Tree(_leaves(n))
        # A log of n leaves stores 2n - popcount(n) hashes: every complete subtree, once.
        assert len(tree.stored) == 2 * n - n.bit_count()
        for (level, index), h in tree.stored.items():
            lo = index << level
            assert lo + (1 << level) <= n
            assert h == tree.mth(lo, lo + (1 << level))


def test_subtree_indexes_decompose_ranges() -> None:
    assert subtree_indexes(0, 0) == []
    assert subtree_indexes(0, 1) == [(0, 0)]
    assert subtree_indexes(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert subtree_indexes(8, 13) == [(2, 2), (0, 12)]
    assert subtree_indexes(0, 1 << 20) == [(20, 0)]


# --- properties on random trees -----------------------------------------------------------------

_SIZES = st.one_of(
    st.integers(1, 70),
    st.integers(500, 3000),
    st.sampled_from([(1 << k) + d for k in range(12) for d in (-1, 0, 1) if (1 << k) + d >= 1]),
)


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    n = draw(_SIZES)
    salt = draw(st.binary(max_size=8))
    return Tree(_leaves(n, salt))


_PROPERTY = settings(max_examples=50, deadline=None)


@_PROPERTY
@given(tree=trees(), data=st.data())
def test_inclusion_proofs_match_rfc_and_verify(tree: Tree, data: st.DataObject) -> None:
    n = tree.size
    root = tree.mth(0, n)
    assert reference_root(tree.leaves) == root
    assert tree.compact.root() == root

    tree.calls.clear()
    assert tree_root(n, tree.read) == root
    assert len(tree.calls) == 1
    assert tree.reads() == n.bit_count()

    indexes = {0, n - 1} | set(data.draw(st.lists(st.integers(0, n - 1), max_size=6)))
    for m in sorted(indexes):
        tree.calls.clear()
        proof = inclusion_proof(m, n, tree.read)
        assert len(tree.calls) == (1 if n > 1 else 0), "one HashReader call per proof"
        assert tree.reads() <= _log_bound(n), (m, n, tree.reads())
        assert proof == tree.path(m, 0, n)
        lh = tree.leaves[m]
        verify_inclusion(m, n, lh, proof, root)

        pos = data.draw(st.integers(0, HASH_SIZE - 1))
        delta = data.draw(st.integers(1, 255))
        for i in range(len(proof)):
            wrong = list(proof)
            wrong[i] = _flip(proof[i], pos, delta)
            assert not _inclusion_ok(m, n, lh, wrong, root), ("proof", i)
        assert not _inclusion_ok(m, n, _flip(lh, pos, delta), proof, root)
        assert not _inclusion_ok(m, n, lh, proof, _flip(root, pos, delta))
        if n > 1:  # any other index
            other = (m + data.draw(st.integers(1, n - 1))) % n
            assert not _inclusion_ok(other, n, lh, proof, root)
        for desc, *args in _inclusion_probes(m, n, proof, root, lh):
            assert not _inclusion_ok(*args), desc  # type: ignore[arg-type]


@_PROPERTY
@given(tree=trees(), data=st.data())
def test_consistency_proofs_match_rfc_and_verify(tree: Tree, data: st.DataObject) -> None:
    n = tree.size
    second = tree.mth(0, n)
    sizes = {1, n} | set(data.draw(st.lists(st.integers(1, n), max_size=6)))
    for m in sorted(sizes):
        first = tree.mth(0, m)
        tree.calls.clear()
        assert tree_root(m, tree.read) == first
        tree.calls.clear()
        proof = consistency_proof(m, n, tree.read)
        assert len(tree.calls) == (1 if m < n else 0), "one HashReader call per proof"
        assert tree.reads() <= _log_bound(n), (m, n, tree.reads())
        assert proof == tree.subproof(m, 0, n, True)
        verify_consistency(m, n, first, second, proof)
        if m == n:
            assert not _consistency_ok(m, n, first, _flip(second, 0), proof)
            continue

        pos = data.draw(st.integers(0, HASH_SIZE - 1))
        delta = data.draw(st.integers(1, 255))
        for i in range(len(proof)):
            wrong = list(proof)
            wrong[i] = _flip(proof[i], pos, delta)
            assert not _consistency_ok(m, n, first, second, wrong), ("proof", i)
        assert not _consistency_ok(m, n, _flip(first, pos, delta), second, proof)
        assert not _consistency_ok(m, n, first, _flip(second, pos, delta), proof)
        for desc, *args in _consistency_probes(m, n, first, second, proof):
            assert not _consistency_ok(*args), desc  # type: ignore[arg-type]


@_PROPERTY
@given(tree=trees(), extra=st.integers(0, 300))
def test_compact_range_round_trips(tree: Tree, extra: int) -> None:
    n = tree.size
    cr = tree.compact
    blob = cr.to_bytes()
    assert len(blob) == HASH_SIZE * n.bit_count()
    restored = CompactRange.from_bytes(n, blob)
    assert restored == cr
    tree.calls.clear()
    from_store = CompactRange.from_reader(n, tree.read)
    assert from_store == cr
    assert len(tree.calls) == 1
    assert tree.reads() == n.bit_count()
    assert restored.root() == from_store.root() == tree.mth(0, n)

    # A restored range keeps growing exactly like the original.
    more = _leaves(extra, b"more")
    original = cr.copy()
    assert original.extend(more) == restored.extend(more)
    assert original == restored
    assert original.root() == reference_root(tree.leaves + more)
    assert cr.size == n, "copy() must not share state"


def test_compact_range_empty_and_extend() -> None:
    tree = Tree([])
    assert CompactRange.from_reader(0, tree.read) == CompactRange()
    assert tree.calls == []
    assert CompactRange.from_bytes(0, b"") == CompactRange()
    a, b = CompactRange(), CompactRange()
    leaves = _leaves(13)
    appended = [t for lh in leaves for t in a.append(lh)]
    assert b.extend(leaves) == appended
    assert a == b


# --- errors are ProofError, never ValueError/IndexError -----------------------------------------


@pytest.mark.parametrize(("m", "n"), [(-1, 5), (5, 5), (6, 5), (0, 0), (0, -1)])
def test_inclusion_proof_bad_ranges(m: int, n: int) -> None:
    with pytest.raises(ProofError):
        inclusion_proof(m, n, Tree(_leaves(8)).read)
    with pytest.raises(ProofError):
        root_from_inclusion_proof(m, n, SOME_HASH, [])


@pytest.mark.parametrize(("m", "n"), [(0, 5), (-1, 5), (6, 5), (0, 0)])
def test_consistency_proof_bad_ranges(m: int, n: int) -> None:
    with pytest.raises(ProofError):
        consistency_proof(m, n, Tree(_leaves(8)).read)
    with pytest.raises(ProofError):
        verify_consistency(m, n, SOME_HASH, SOME_HASH, [SOME_HASH])


def test_tree_root_negative_size() -> None:
    with pytest.raises(ProofError):
        tree_root(-1, Tree([]).read)


@pytest.mark.parametrize(
    "reader",
    [
        lambda idx: [],  # too few
        lambda idx: [b"\x00" * 32] * (len(idx) + 1),  # too many
        lambda idx: [b"\x00" * 31] * len(idx),  # wrong size
        lambda idx: [b"\x00" * 33] * len(idx),
    ],
)
def test_bad_hash_reader_is_proof_error(reader: object) -> None:
    for call in (
        lambda: tree_root(5, reader),  # type: ignore[arg-type]
        lambda: inclusion_proof(2, 5, reader),  # type: ignore[arg-type]
        lambda: consistency_proof(3, 5, reader),  # type: ignore[arg-type]
        lambda: CompactRange.from_reader(5, reader),  # type: ignore[arg-type]
    ):
        with pytest.raises(ProofError):
            call()


def test_malformed_inclusion_proofs() -> None:
    tree = Tree(_leaves(11))
    root = tree.mth(0, 11)
    proof = inclusion_proof(4, 11, tree.read)
    lh = tree.leaves[4]
    for bad in (
        [],
        proof[:-1],
        [*proof, SOME_HASH],
        [*proof[:-1], proof[-1][:31]],
        [*proof[:-1], proof[-1] + b"\x00"],
        [b"", *proof[1:]],
    ):
        with pytest.raises(ProofError):
            verify_inclusion(4, 11, lh, bad, root)
        with contextlib.suppress(ProofError):
            assert root_from_inclusion_proof(4, 11, lh, bad) != root
    with pytest.raises(ProofError):
        verify_inclusion(4, 11, lh[:31], proof, root)


def test_malformed_consistency_proofs() -> None:
    tree = Tree(_leaves(11))
    r1, r2 = tree.mth(0, 4), tree.mth(0, 11)
    proof = consistency_proof(4, 11, tree.read)
    for bad in (
        [],
        proof[:-1],
        [*proof, SOME_HASH],
        [*proof[:-1], proof[-1][:31]],
        [b"", *proof[1:]],
        [SOME_HASH] * 40,
    ):
        with pytest.raises(ProofError):
            verify_consistency(4, 11, r1, r2, bad)


@pytest.mark.parametrize(
    ("size", "hashes"),
    [(3, [b"\x00" * 32]), (1, []), (2, [b"\x00" * 32] * 2), (-1, [b"\x00" * 32]), (1, [b"x"])],
)
def test_compact_range_rejects_inconsistent_state(size: int, hashes: list[bytes]) -> None:
    with pytest.raises(ProofError):
        CompactRange(size, hashes)
    with pytest.raises(ProofError):
        CompactRange.from_bytes(size, b"".join(hashes))


def test_compact_range_from_bytes_wrong_length() -> None:
    blob = Tree(_leaves(5)).compact.to_bytes()
    for bad in (blob[:-1], blob + b"\x00", b"", blob * 2):
        with pytest.raises(ProofError):
            CompactRange.from_bytes(5, bad)


@settings(max_examples=300, deadline=None)
@given(
    m=st.integers(-2, 70),
    n=st.integers(-2, 70),
    lh=st.binary(min_size=0, max_size=40),
    root=st.binary(min_size=0, max_size=40),
    proof=st.lists(
        st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)), max_size=10
    ),
)
def test_verifiers_only_raise_proof_error(
    m: int, n: int, lh: bytes, root: bytes, proof: list[bytes]
) -> None:
    with contextlib.suppress(ProofError):
        verify_inclusion(m, n, lh, proof, root)
    with contextlib.suppress(ProofError):
        verify_consistency(m, n, lh, root, proof)
