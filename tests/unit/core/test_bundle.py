"""tlog-proof bundles (audit_ledger.core.bundle): the spec's format, offline verification under
a policy, and that any one-byte change to a bundle fails verification (property test)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core import merkle
from audit_ledger.core.bundle import HEADER, encode_bundle, parse_bundle, verify_bundle
from audit_ledger.core.checkpoint import Checkpoint
from audit_ledger.core.policy import TlogPolicy, key_history_policy, parse_policy
from audit_ledger.errors import BundleError, CoreError, PolicyError
from tests.support.tlog_keys import LogKey, Witness, log_key, witness

ORIGIN = "example.com/log"
SIZE = 13


def _leaves(n: int) -> list[bytes]:
    return [json.dumps({"seq": i, "v": 1}, separators=(",", ":")).encode() for i in range(n)]


class World:
    def __init__(self) -> None:
        self.log: LogKey = log_key(ORIGIN)
        self.w1: Witness = witness("w1.example")
        self.w2: Witness = witness("w2.example")
        self.leaves = _leaves(SIZE)
        hashes = {(0, i): merkle.leaf_hash(leaf) for i, leaf in enumerate(self.leaves)}
        tree = merkle.CompactRange()
        for level, index, h in tree.extend(merkle.leaf_hash(leaf) for leaf in self.leaves):
            hashes[(level, index)] = h
        self.read = lambda wanted: [hashes[w] for w in wanted]
        self.note = self.w2.cosign(
            self.w1.cosign(self.log.sign(Checkpoint(ORIGIN, SIZE, tree.root())))
        )
        self.policy = parse_policy(
            (
                f"log {self.log.verifier.encode()}\n"
                f"witness A {self.w1.key.encode()}\nwitness B {self.w2.key.encode()}\n"
                "group AB all A B\nquorum AB\n"
            ).encode()
        )

    def bundle(self, index: int, *, extra: bool = True) -> str:
        proof = merkle.inclusion_proof(index, SIZE, self.read)
        return encode_bundle(index, proof, self.note, self.leaves[index] if extra else None)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_every_entry_verifies(world: World) -> None:
    for index in range(SIZE):
        verified = verify_bundle(world.bundle(index).encode(), world.policy)
        assert (verified.index, verified.leaf) == (index, world.leaves[index])
        assert verified.checkpoint.size == SIZE
        assert verified.verified.cosigners == {"A", "B"}


def test_format_is_the_spec_s(world: World) -> None:
    text = world.bundle(5)
    lines = text.split("\n")
    assert lines[0] == HEADER == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ")
    assert lines[2] == "index 5"
    proof_lines = lines[3 : lines.index("")]
    assert len(proof_lines) == len(merkle.inclusion_proof(5, SIZE, world.read)) == 4
    assert text.endswith(world.note)  # the checkpoint verbatim, cosignatures included
    assert text.count("\u2014 ") == 3
    parsed = parse_bundle(text)
    assert parsed.encode() == text


def test_without_extra_the_leaf_must_be_given(world: World) -> None:
    text = world.bundle(3, extra=False)
    assert "\nextra " not in text
    with pytest.raises(BundleError, match="no leaf bytes"):
        verify_bundle(text, world.policy)
    assert verify_bundle(text, world.policy, leaf=world.leaves[3]).index == 3
    with pytest.raises(BundleError, match="does not lead"):
        verify_bundle(text, world.policy, leaf=world.leaves[4])
    with pytest.raises(BundleError, match="not the entry given"):
        verify_bundle(world.bundle(3), world.policy, leaf=world.leaves[4])


def test_single_entry_log_has_an_empty_proof() -> None:
    key = log_key(ORIGIN)
    leaf = b'{"seq":0}'
    note = key.sign(Checkpoint(ORIGIN, 1, merkle.leaf_hash(leaf)))
    text = encode_bundle(0, [], note, leaf)
    assert "\nindex 0\n\n" in text
    assert verify_bundle(text, key_history_policy([key.verifier])).index == 0


def test_quorum_and_key_are_enforced(world: World) -> None:
    text = world.bundle(7)
    with pytest.raises(PolicyError, match="no signature by a log key"):
        verify_bundle(text, key_history_policy([log_key(ORIGIN).verifier]))
    checkpoint = verify_bundle(text, world.policy).checkpoint
    one = world.w1.cosign(world.log.sign(checkpoint))
    partial = encode_bundle(7, merkle.inclusion_proof(7, SIZE, world.read), one, world.leaves[7])
    with pytest.raises(PolicyError, match="group AB has 1 of the 2"):
        verify_bundle(partial, world.policy)


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda t: t.replace(HEADER, "c2sp.org/tlog-proof@v2", 1), "does not start"),
        (lambda t: t.replace("index 9", "index 09", 1), "index line"),
        (lambda t: t.replace("index 9", "index  9", 1), "index line"),
        (lambda t: t.replace("index 9", "index 99", 1), "outside"),
        (lambda t: t.replace("\n\n", "\n", 1), "empty line|index line|base64"),
        (lambda t: t.replace("extra ", "extra  ", 1), "base64"),
        (lambda t: t.replace("index 9\n", "", 1), "index line"),
        (lambda t: t.replace("index 9\n", "index 9\n\n", 1), "checkpoint is malformed"),
        (lambda t: t.rstrip("\n"), "malformed"),
        (lambda t: t.replace("\n", "\r\n", 1), "does not start"),
        (lambda t: "", "no empty line"),
    ],
)
def test_malformed_bundles(world: World, mangle: object, problem: str) -> None:
    text = mangle(world.bundle(9))  # type: ignore[operator]
    with pytest.raises(BundleError, match=problem):
        verify_bundle(text, world.policy)


def test_a_truncated_proof_fails(world: World) -> None:
    lines = world.bundle(9).split("\n")
    del lines[3]
    with pytest.raises(BundleError, match="malformed"):
        verify_bundle("\n".join(lines), world.policy)
    with pytest.raises(BundleError, match="not UTF-8"):
        verify_bundle(b"\xff" + world.bundle(9).encode(), world.policy)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_one_byte_change_fails(world: World, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, SIZE - 1))
    raw = bytearray(world.bundle(index).encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[pos]))
    raw[pos] = value
    with pytest.raises(CoreError):
        verify_bundle(bytes(raw), world.policy)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_deleted_or_inserted_byte_fails(world: World, data: st.DataObject) -> None:
    raw = bytearray(world.bundle(data.draw(st.integers(0, SIZE - 1))).encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    if data.draw(st.booleans()):
        del raw[pos]
    else:
        raw.insert(pos, data.draw(st.integers(0, 255)))
    with pytest.raises(CoreError):
        verify_bundle(bytes(raw), world.policy)


def test_every_single_byte_change_fails_exhaustively(world: World) -> None:
    """Each position of one bundle, changed by one bit flip (no sampling)."""
    raw = world.bundle(SIZE - 1).encode()
    for pos in range(len(raw)):
        for bit in (0x01, 0x20):
            mutated = bytearray(raw)
            mutated[pos] ^= bit
            with pytest.raises(CoreError):
                verify_bundle(bytes(mutated), world.policy)


def test_unknown_signatures_are_ignored_by_a_policy_that_does_not_need_them(world: World) -> None:
    """signed-note: lines by keys the verifier does not know are ignored (DESIGN §7), so with
    ``quorum none`` a bundle whose witness lines were altered still proves its entry."""
    text = world.bundle(2)
    lax = TlogPolicy((world.log.verifier,))
    altered = text.replace("\u2014 w2.example", "\u2014 w3.example", 1)
    assert verify_bundle(altered, lax).index == 2
    with pytest.raises(PolicyError):
        verify_bundle(altered, world.policy)
    assert hashlib.sha256(altered.encode()).digest() != hashlib.sha256(text.encode()).digest()
