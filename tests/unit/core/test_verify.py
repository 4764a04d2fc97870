"""Streaming chain + tree verification (audit_ledger.core.verify.ChainVerifier)."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from audit_ledger.core.header import ZERO_HASH_HEX, LeafHeader, parse_leaf
from audit_ledger.core.merkle import leaf_hash, reference_root, tree_root
from audit_ledger.core.verify import ChainVerifier, SegmentVerifier
from audit_ledger.errors import ChainBrokenError, CoreError, FormatError

_START = datetime(2026, 11, 28, 3, 55, 17, 123456, tzinfo=UTC)
_CATEGORIES = ["financial_transactions", "data_privacy_events", "security_events"]


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _header(seq: int, prev: str, recorded: datetime, rng: random.Random) -> LeafHeader:
    return LeafHeader(
        seq=seq,
        event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        category=rng.choice(_CATEGORIES),
        event_type=rng.choice(["payment_completed", "login_failed", "consent_recorded"]),
        occurred_at=_ts(recorded - timedelta(microseconds=rng.randrange(10**7))),
        recorded_at=_ts(recorded),
        writer=rng.choice(["quickcart-bot", "ledger", "b\u00f6t"]),
        correlation_id=rng.choice([None, f"corr-{seq}"]),
        refs={"order": rng.randbytes(32).hex()} if rng.random() < 0.5 else {},
        key_id=rng.choice([None, "dek-2026-11"]),
        payload_sha256=rng.randbytes(32).hex() if rng.random() < 0.8 else None,
        prev=prev,
    )


def make_chain(
    n: int,
    seed: int = 0,
    *,
    overrides: dict[int, dict[str, object]] | None = None,
) -> list[bytes]:
    """A valid log of ``n`` leaves; ``overrides[seq]`` replaces header members of one entry
    (the following entries are still chained to it correctly)."""
    rng = random.Random(seed)
    leaves: list[bytes] = []
    prev = ZERO_HASH_HEX
    recorded = _START
    for seq in range(n):
        recorded += timedelta(microseconds=rng.choice([0, 0, 1, 999_999, 3_600_000_000]))
        header = _header(seq, prev, recorded, rng)
        if overrides and seq in overrides:
            fields = {**header.to_dict(), **overrides[seq]}
            header = LeafHeader(**fields)
            recorded = datetime.fromisoformat(header.recorded_at[:-1] + "+00:00")
        leaf = header.encode()
        leaves.append(leaf)
        prev = leaf_hash(leaf).hex()
    return leaves


def run(entries: Iterable[tuple[int, bytes]]) -> ChainVerifier:
    verifier = ChainVerifier()
    for seq, leaf in entries:
        verifier.add(seq, leaf)
    return verifier


def broken_at(entries: Iterable[tuple[int, bytes]]) -> ChainBrokenError:
    with pytest.raises(ChainBrokenError) as info:
        run(entries)
    return info.value


def _enumerated(leaves: Sequence[bytes]) -> list[tuple[int, bytes]]:
    return list(enumerate(leaves))


# --- a valid chain ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 8, 33, 100])
def test_valid_chain_passes(n: int) -> None:
    leaves = make_chain(n, seed=n)
    verifier = ChainVerifier()
    stored: dict[tuple[int, int], bytes] = {}
    hashes = [leaf_hash(leaf) for leaf in leaves]
    for seq, leaf in enumerate(leaves):
        result = verifier.add(seq, leaf)
        assert result.header == parse_leaf(leaf)
        assert result.leaf_hash == hashes[seq]
        assert result.subtrees[0] == (0, seq, hashes[seq])
        for level, index, h in result.subtrees:
            stored[(level, index)] = h
        assert verifier.size == seq + 1
        assert verifier.root() == reference_root(hashes[: seq + 1])
        assert verifier.last_leaf_hex == hashes[seq].hex()
        assert verifier.last_recorded_at == result.header.recorded_at
    assert verifier.size == n
    assert verifier.root() == reference_root(hashes)
    # The subtrees it reports are what storage keeps: they answer every tree head.
    assert len(stored) == 2 * n - n.bit_count()
    for size in range(n + 1):
        assert tree_root(size, lambda idx: [stored[i] for i in idx]) == reference_root(
            hashes[:size]
        )


def test_fresh_verifier_state() -> None:
    verifier = ChainVerifier()
    assert verifier.size == 0
    assert verifier.last_leaf_hex == ZERO_HASH_HEX
    assert verifier.last_recorded_at is None
    assert verifier.root() == reference_root([])


def test_equal_recorded_at_is_allowed() -> None:
    leaves = make_chain(5, overrides={k: {"recorded_at": _ts(_START)} for k in range(5)})
    assert {parse_leaf(leaf).recorded_at for leaf in leaves} == {_ts(_START)}
    assert run(_enumerated(leaves)).size == 5


def test_chain_broken_error_is_a_core_error() -> None:
    err = broken_at([(1, make_chain(1)[0])])
    assert isinstance(err, CoreError)
    assert err.seq == 0
    assert err.reason
    assert str(err).startswith("seq 0: ")


# --- each kind of damage is reported at the right seq ------------------------------------------


def _expected_seq_for_changed_leaf(leaves: list[bytes], i: int, changed: bytes) -> int | None:
    """Where a chain with leaf i replaced by ``changed`` must first be reported broken.

    At i when the changed leaf is not itself a valid successor of entry i-1 (not canonical v1,
    wrong seq, wrong prev, recorded_at going back); otherwise at i+1, whose prev no longer
    matches; and nowhere for the last entry (then only the root differs).
    """
    try:
        header = parse_leaf(changed)
    except FormatError:
        return i
    prev = leaf_hash(leaves[i - 1]).hex() if i else ZERO_HASH_HEX
    last = parse_leaf(leaves[i - 1]).recorded_at if i else ""
    if header.seq != i or header.prev != prev or header.recorded_at < last:
        return i
    return i + 1 if i + 1 < len(leaves) else None


def test_every_one_byte_change_of_a_leaf_is_caught() -> None:
    leaves = make_chain(6, seed=7)
    good_root = run(_enumerated(leaves)).root()
    rng = random.Random(1)
    seen_at_next = 0
    for i, leaf in enumerate(leaves):
        for pos in range(len(leaf)):
            changed = bytearray(leaf)
            changed[pos] = rng.choice([b for b in range(256) if b != leaf[pos]])
            tampered = [*leaves[:i], bytes(changed), *leaves[i + 1 :]]
            expected = _expected_seq_for_changed_leaf(leaves, i, bytes(changed))
            if expected is None:
                assert run(_enumerated(tampered)).root() != good_root
                continue
            err = broken_at(_enumerated(tampered))
            assert err.seq == expected, (i, pos, err)
            if expected == i + 1:
                seen_at_next += 1
                assert "prev" in err.reason
    assert seen_at_next > 0, "some changes keep the leaf valid (e.g. inside a string)"


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 12),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_one_byte_change_property(n: int, seed: int, data: st.DataObject) -> None:
    leaves = make_chain(n, seed)
    i = data.draw(st.integers(0, n - 1))
    pos = data.draw(st.integers(0, len(leaves[i]) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != leaves[i][pos]))
    changed = bytearray(leaves[i])
    changed[pos] = new
    tampered = [*leaves[:i], bytes(changed), *leaves[i + 1 :]]
    expected = _expected_seq_for_changed_leaf(leaves, i, bytes(changed))
    if expected is None:
        assert run(_enumerated(tampered)).root() != run(_enumerated(leaves)).root()
    else:
        assert broken_at(_enumerated(tampered)).seq == expected


@pytest.mark.parametrize("skipped", [0, 1, 5, 8])
def test_skipped_seq(skipped: int) -> None:
    entries = [e for e in _enumerated(make_chain(10)) if e[0] != skipped]
    err = broken_at(entries)
    assert err.seq == skipped
    assert "gap" in err.reason


def test_skipped_last_seq_is_not_a_chain_error() -> None:
    # A missing tail is not visible in the chain; the tree size/root against a checkpoint is.
    leaves = make_chain(10)
    verifier = run(_enumerated(leaves)[:-1])
    assert verifier.size == 9
    assert verifier.root() != reference_root([leaf_hash(x) for x in leaves])


@pytest.mark.parametrize(("i", "j"), [(0, 1), (3, 4), (2, 7), (0, 9), (8, 9)])
def test_swapped_entries(i: int, j: int) -> None:
    entries = _enumerated(make_chain(10))
    entries[i], entries[j] = entries[j], entries[i]
    # Rows in the wrong order (each keeps its own seq) ...
    assert broken_at(entries).seq == i
    # ... or the leaf bytes swapped between two rows.
    leaves = [leaf for _, leaf in entries]
    assert broken_at(_enumerated(leaves)).seq == i


@pytest.mark.parametrize("dup", [0, 3, 9])
def test_duplicated_entry(dup: int) -> None:
    entries = _enumerated(make_chain(10))
    entries.insert(dup + 1, entries[dup])
    assert broken_at(entries).seq == dup


@pytest.mark.parametrize("i", [1, 2, 6, 9])
def test_wrong_prev(i: int) -> None:
    leaves = make_chain(10, seed=3, overrides={i: {"prev": "ab" * 32}})
    err = broken_at(_enumerated(leaves))
    assert err.seq == i
    assert "prev" in err.reason
    # Every entry is well-formed on its own: only the chain is broken.
    for leaf in leaves:
        parse_leaf(leaf)


def test_seq_zero_with_nonzero_prev() -> None:
    leaves = make_chain(3)
    obj = parse_leaf(leaves[0]).to_dict()
    obj["prev"] = "ab" * 32
    bad = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(FormatError):
        parse_leaf(bad)
    assert broken_at([(0, bad), *_enumerated(leaves)[1:]]).seq == 0


@pytest.mark.parametrize("i", [1, 4, 9])
def test_decreasing_recorded_at(i: int) -> None:
    leaves = make_chain(10, seed=11)
    before = datetime.fromisoformat(parse_leaf(leaves[i - 1]).recorded_at[:-1] + "+00:00")
    earlier = _ts(before - timedelta(microseconds=1))
    bad = make_chain(10, seed=11, overrides={i: {"recorded_at": earlier}})
    assert bad[:i] == leaves[:i]
    err = broken_at(_enumerated(bad))
    assert err.seq == i
    assert "recorded_at" in err.reason


def test_leaf_that_claims_another_seq() -> None:
    leaves = make_chain(4)
    # Leaf 2 stored under seq 2 but encoding seq 3 (its bytes are a valid leaf otherwise).
    relabelled = make_chain(4, overrides={2: {"seq": 3}})
    err = broken_at(_enumerated([*leaves[:2], relabelled[2], leaves[3]]))
    assert err.seq == 2


@pytest.mark.parametrize(
    "garbage", [b"", b"{}", b"not json", b"\xff\xfe", b'{"v":1}', b"[" * 10_000]
)
def test_garbage_leaf(garbage: bytes) -> None:
    leaves = make_chain(5)
    assert broken_at(_enumerated([*leaves[:3], garbage, leaves[4]])).seq == 3


def test_verifier_stops_at_the_first_break() -> None:
    leaves = make_chain(6, overrides={2: {"prev": "cd" * 32}, 4: {"prev": "ef" * 32}})
    verifier = ChainVerifier()
    verifier.add(0, leaves[0])
    verifier.add(1, leaves[1])
    root = verifier.root()
    with pytest.raises(ChainBrokenError) as info:
        verifier.add(2, leaves[2])
    assert info.value.seq == 2
    # A rejected entry leaves the state untouched.
    assert verifier.size == 2
    assert verifier.root() == root
    assert verifier.last_leaf_hex == leaf_hash(leaves[1]).hex()


# --- segments: the same verdicts when the log is checked in pieces and joined ------------------


def run_segmented(entries: Sequence[tuple[int, bytes]], cuts: Sequence[int]) -> ChainVerifier:
    """Check ``entries`` (by seq) in segments starting at 0 and at each cut, joining them in
    order the way parallel verification does; raise the first problem in log order."""
    chain = ChainVerifier()
    bounds = [0, *sorted(set(cuts)), 1 << 60]
    for lo, hi in itertools.pairwise(bounds):
        if chain.size != lo:
            # The previous segment ended early: the end of the log, or a gap (as _Run does).
            following = [seq for seq, _ in entries if seq >= chain.size]
            if following and min(following) != chain.size:
                raise ChainBrokenError(chain.size, f"missing entry (gap): got {min(following)}")
            return chain
        segment = SegmentVerifier(lo)
        failure: ChainBrokenError | None = None
        try:
            for seq, leaf in entries:
                if lo <= seq < hi:
                    segment.add(seq, leaf)
        except ChainBrokenError as exc:
            failure = exc
        chain.check_seam(segment.first_prev, segment.first_recorded_at)
        hashes = segment.leaf_hashes
        if failure is not None and failure.seq is not None:
            hashes = hashes[: failure.seq - lo]
        for lh in hashes:
            chain.append(lh)
        chain.end_segment(segment.last_recorded_at)
        if failure is not None:
            raise failure
    return chain


def _verdict(run_it: Callable[[], ChainVerifier]) -> tuple[int | None, str] | bytes:
    try:
        return run_it().root()
    except ChainBrokenError as exc:
        return exc.seq, exc.reason


@settings(max_examples=80, deadline=None)
@example(n=10, cuts=[5], fault="drop", where=4)  # the last entry of a segment is missing
@example(n=10, cuts=[5], fault="swap", where=4)  # entries swapped across a seam
@example(n=10, cuts=[5], fault="prev", where=5)  # a broken link right at the seam
@given(
    n=st.integers(min_value=1, max_value=40),
    cuts=st.lists(st.integers(min_value=1, max_value=45), max_size=6),
    fault=st.sampled_from(["none", "prev", "recorded_at", "leaf", "drop", "swap"]),
    where=st.integers(min_value=0, max_value=39),
)
def test_segments_joined_give_the_sequential_verdict(
    n: int, cuts: list[int], fault: str, where: int
) -> None:
    where = where % n
    overrides: dict[int, dict[str, object]] = {}
    if fault == "prev" and where > 0:
        overrides[where] = {"prev": "ab" * 32}
    if fault == "recorded_at" and where > 0:
        overrides[where] = {"recorded_at": "2000-01-01T00:00:00.000000Z"}
    entries = _enumerated(make_chain(n, seed=n, overrides=overrides))
    if fault == "leaf":
        seq, leaf = entries[where]
        entries[where] = (seq, leaf.replace(b'"v":1', b'"v":2'))
    elif fault == "drop":
        del entries[where]
    elif fault == "swap" and where + 1 < n:
        # Two rows' contents exchanged (storage returns rows in seq order).
        (a, leaf_a), (b, leaf_b) = entries[where], entries[where + 1]
        entries[where], entries[where + 1] = (a, leaf_b), (b, leaf_a)
    expected = _verdict(lambda: run(entries))
    assert _verdict(lambda: run_segmented(entries, cuts)) == expected


# --- resuming after a verified prefix (an auditor's saved state) ---------------------------------


@given(n=st.integers(0, 70), cut=st.integers(0, 70))
@settings(max_examples=60, deadline=None)
def test_resumed_verifier_matches_one_run(n: int, cut: int) -> None:
    leaves = make_chain(n, seed=n)
    cut = min(cut, n)
    prefix = run(_enumerated(leaves[:cut]))
    resumed = ChainVerifier(
        prefix.tree,
        bytes.fromhex(prefix.last_leaf_hex) if cut else None,
        prefix.last_recorded_at,
    )
    for seq in range(cut, n):
        resumed.add(seq, leaves[seq])
    whole = run(_enumerated(leaves))
    assert (resumed.size, resumed.root(), resumed.last_leaf_hex) == (
        whole.size,
        whole.root(),
        whole.last_leaf_hex,
    )
    assert prefix.size == cut  # the prefix's tree was copied, not shared


def test_resumed_verifier_checks_the_seam() -> None:
    leaves = make_chain(10, seed=3)
    prefix = run(_enumerated(leaves[:6]))
    wrong_last = ChainVerifier(prefix.tree, b"\x00" * 32, prefix.last_recorded_at)
    with pytest.raises(ChainBrokenError) as info:
        wrong_last.add(6, leaves[6])
    assert info.value.seq == 6
    later = ChainVerifier(
        prefix.tree, bytes.fromhex(prefix.last_leaf_hex), "2999-01-01T00:00:00.000000Z"
    )
    with pytest.raises(ChainBrokenError, match="recorded_at decreases"):
        later.add(6, leaves[6])
    with pytest.raises(ChainBrokenError, match="gap"):
        ChainVerifier(prefix.tree, bytes.fromhex(prefix.last_leaf_hex), "x").add(7, leaves[7])


def test_resume_needs_the_whole_state() -> None:
    prefix = run(_enumerated(make_chain(3)))
    last = bytes.fromhex(prefix.last_leaf_hex)
    with pytest.raises(FormatError):
        ChainVerifier(prefix.tree, None, prefix.last_recorded_at)
    with pytest.raises(FormatError):
        ChainVerifier(prefix.tree, last, None)
    with pytest.raises(FormatError):
        ChainVerifier(None, last, prefix.last_recorded_at)
