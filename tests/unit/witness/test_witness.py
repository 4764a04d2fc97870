"""The witness's add-checkpoint state machine, in-process, against C2SP tlog-witness v1: each
refusal is the spec's error (the HTTP status is checked in ``test_app.py``), state survives a
reopen of the SQLite file, and only consistent checkpoints are cosigned."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit_ledger.core.checkpoint import split_note
from audit_ledger.core.cosignature import cosignature_message, verified_cosignatures
from audit_ledger.core.tlog_witness import format_add_checkpoint, parse_cosignature_lines
from audit_ledger.errors import ConfigError
from audit_ledger.witness.keys import KEY_FILE, init_witness_key, load_witness_key
from audit_ledger.witness.state import STATE_FILE, WitnessState
from audit_ledger.witness.witness import (
    ForkError,
    InconsistentProofError,
    LogSignatureError,
    MalformedRequestError,
    SizeConflictError,
    UnknownLogError,
    Witness,
)
from tests.support.tlog import MemoryLog

ORIGIN = "test.example/log"
NOW = 1_700_000_000


@pytest.fixture
def log() -> MemoryLog:
    memory = MemoryLog(ORIGIN)
    memory.append(37)
    return memory


def open_witness(tmp_path: Path) -> Witness:
    keys = tmp_path / "keys"
    if not (keys / KEY_FILE).exists():
        init_witness_key(keys, "witness.example/w1")
    return Witness(WitnessState(tmp_path / STATE_FILE), load_witness_key(keys), lambda: NOW)


@pytest.fixture
def witness(tmp_path: Path, log: MemoryLog) -> Witness:
    w = open_witness(tmp_path)
    w.state.add_log(log.verifier.encode())
    return w


def test_cosigns_a_first_checkpoint_and_then_a_consistent_one(
    witness: Witness, log: MemoryLog
) -> None:
    line = witness.add_checkpoint(log.request(0, 20))
    note = log.note(20) + line
    (cosig,) = verified_cosignatures(note, [witness.signer.key])
    assert cosig.timestamp == NOW
    # The same check with nothing of ours: the spec's message under plain Ed25519.
    (sig,) = parse_cosignature_lines(line.encode())
    Ed25519PublicKey.from_public_bytes(witness.signer.key.public_key).verify(
        sig.blob[12:], cosignature_message(log.body(20), NOW)
    )
    assert witness.state.latest(ORIGIN) is not None
    witness.add_checkpoint(log.request(20, 37))
    latest = witness.state.latest(ORIGIN)
    assert latest is not None
    assert (latest.size, latest.root_hash) == (37, log.root(37))


def test_old_size_other_than_the_witness_size_is_a_conflict_with_that_size(
    witness: Witness, log: MemoryLog
) -> None:
    with pytest.raises(SizeConflictError) as first:
        witness.add_checkpoint(log.request(5, 20))  # never cosigned: the witness's size is 0
    assert first.value.size == 0
    witness.add_checkpoint(log.request(0, 20))
    with pytest.raises(SizeConflictError) as again:
        witness.add_checkpoint(log.request(0, 37))
    assert again.value.size == 20
    with pytest.raises(SizeConflictError) as other:
        witness.add_checkpoint(log.request(10, 37))
    assert other.value.size == 20


def test_a_rollback_is_refused(witness: Witness, log: MemoryLog) -> None:
    witness.add_checkpoint(log.request(0, 30))
    # old = the witness's size, new smaller: the spec's 400 (old size > checkpoint size)
    with pytest.raises(MalformedRequestError):
        witness.add_checkpoint(format_add_checkpoint(30, [], log.note(20)))
    # or claiming the smaller size as old: a conflict naming the witness's size
    with pytest.raises(SizeConflictError) as conflict:
        witness.add_checkpoint(log.request(20, 20))
    assert conflict.value.size == 30
    latest = witness.state.latest(ORIGIN)
    assert latest is not None
    assert latest.size == 30


def test_a_fork_at_the_same_size_is_refused_and_kept_as_evidence(
    witness: Witness, log: MemoryLog
) -> None:
    witness.add_checkpoint(log.request(0, 20))
    fork = MemoryLog(ORIGIN, log.private)  # same key, other leaves
    fork.append(20)
    with pytest.raises(ForkError) as refused:
        witness.add_checkpoint(fork.request(20, 20))
    assert refused.value.size == 20
    assert witness.state.refusals(ORIGIN) == [("ForkError", 20, 20)]


def test_a_fork_that_grows_fails_the_consistency_proof(witness: Witness, log: MemoryLog) -> None:
    witness.add_checkpoint(log.request(0, 20))
    fork = MemoryLog(ORIGIN, log.private)
    fork.append(30)
    with pytest.raises(InconsistentProofError):
        witness.add_checkpoint(fork.request(20, 30))
    assert witness.state.refusals(ORIGIN) == [("InconsistentProofError", 20, 30)]
    latest = witness.state.latest(ORIGIN)
    assert latest is not None
    assert latest.root_hash == log.root(20)


@pytest.mark.parametrize("damage", ["flip", "drop", "extra"])
def test_a_bad_proof_is_refused(witness: Witness, log: MemoryLog, damage: str) -> None:
    witness.add_checkpoint(log.request(0, 13))
    proof = log.proof(13, 37)
    if damage == "flip":
        proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    elif damage == "drop":
        proof = proof[:-1]
    else:
        proof = [*proof, os.urandom(32)]
    with pytest.raises(InconsistentProofError):
        witness.add_checkpoint(format_add_checkpoint(13, proof, log.note(37)))


def test_a_proof_with_old_size_zero_must_be_empty(witness: Witness, log: MemoryLog) -> None:
    with pytest.raises(InconsistentProofError):
        witness.add_checkpoint(format_add_checkpoint(0, [os.urandom(32)], log.note(20)))


def test_unknown_origin(witness: Witness) -> None:
    stranger = MemoryLog("other.example/log")
    stranger.append(3)
    with pytest.raises(UnknownLogError):
        witness.add_checkpoint(stranger.request(0, 3))


def test_bad_or_missing_log_signature(witness: Witness, log: MemoryLog) -> None:
    impostor = MemoryLog(ORIGIN)  # same origin, another key
    impostor.append(3)
    with pytest.raises(LogSignatureError):
        witness.add_checkpoint(impostor.request(0, 3))
    note = log.note(20)
    text, sigs = split_note(note)
    blob = bytearray(sigs[0].blob)
    blob[10] ^= 1  # a signature by the trusted key that does not verify
    forged = text + "\n\u2014 " + ORIGIN + " " + base64.b64encode(bytes(blob)).decode() + "\n"
    with pytest.raises(LogSignatureError):
        witness.add_checkpoint(format_add_checkpoint(0, [], forged))
    assert witness.state.latest(ORIGIN) is None


def test_unknown_signatures_are_ignored_beside_a_trusted_one(
    witness: Witness, log: MemoryLog
) -> None:
    other = MemoryLog("other.example/key")
    extra = other.note(0).split("\n\n")[1]  # a signature line by a key the witness ignores
    witness.add_checkpoint(format_add_checkpoint(0, [], log.note(20) + extra))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 01\n\nx",
        b"old -1\n\n",
        b"new 0\n\n",
        b"old 0\nnot base64!\n\n",
        b"old 0\n" + base64.b64encode(b"short") + b"\n\n",
        b"old 0\n" + b"\n".join([base64.b64encode(bytes(32))] * 64) + b"\n\n",
        b"\xff\xfe",
        b"old 0\n\norigin\n1\nAAAA\n",  # no signature block
    ],
)
def test_malformed_bodies(witness: Witness, body: bytes) -> None:
    with pytest.raises(MalformedRequestError):
        witness.add_checkpoint(body)


def test_state_survives_reopening(tmp_path: Path, log: MemoryLog) -> None:
    first = open_witness(tmp_path)
    first.state.add_log(log.verifier.encode())
    first.add_checkpoint(log.request(0, 25))
    first.state.close()
    second = open_witness(tmp_path)
    with pytest.raises(SizeConflictError) as conflict:
        second.add_checkpoint(log.request(0, 30))
    assert conflict.value.size == 25
    second.add_checkpoint(log.request(25, 30))


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    key = init_witness_key(keys, "witness.example/w1")
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / KEY_FILE).stat().st_mode) == 0o600
    assert load_witness_key(keys).key == key
    with pytest.raises(ConfigError, match="already exists"):
        init_witness_key(keys, "witness.example/w1")
    (keys / KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_witness_key(keys)
    (keys / KEY_FILE).chmod(0o600)
    secret = (keys / KEY_FILE).read_text().strip().split("+", 4)[4]
    assert secret not in repr(load_witness_key(keys))


def test_concurrent_submissions_are_a_compare_and_swap(witness: Witness, log: MemoryLog) -> None:
    """tlog-witness: checking the old size and storing the new checkpoint are one atomic step.
    Requests racing from the same old size: exactly one is cosigned, the others get a 409 with
    the size that won, and the stored size is the winner's (never rolled back)."""
    bodies = [log.request(0, size) for size in (5, 10, 15, 20, 25, 30)]
    outcomes: list[int | str] = []
    barrier = threading.Barrier(len(bodies))

    def submit(body: bytes) -> None:
        barrier.wait()
        try:
            witness.add_checkpoint(body)
            outcomes.append("ok")
        except SizeConflictError as exc:
            outcomes.append(exc.size)

    threads = [threading.Thread(target=submit, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("ok") == 1
    latest = witness.state.latest(ORIGIN)
    assert latest is not None
    assert sorted(o for o in outcomes if o != "ok") == [latest.size] * (len(bodies) - 1)
