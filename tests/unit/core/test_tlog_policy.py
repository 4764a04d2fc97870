"""tlog-policy files (audit_ledger.core.policy): the spec's syntax rules, and quorum evaluation
on checkpoints cosigned in the test with real Ed25519 witness keys."""

from __future__ import annotations

import hashlib

import pytest

from audit_ledger.core.checkpoint import Checkpoint
from audit_ledger.core.policy import key_history_policy, parse_policy
from audit_ledger.errors import CheckpointError, PolicyError, PolicySyntaxError
from tests.support.tlog_keys import add_signature, log_key, witness

ORIGIN = "example.com/log"
CHECKPOINT = Checkpoint(ORIGIN, 10, hashlib.sha256(b"root").digest())


@pytest.fixture(scope="module")
def world() -> dict[str, object]:
    return {
        "log": log_key(ORIGIN),
        **{name: witness(f"{name.lower()}.example") for name in ("X1", "X2", "X3", "Y1", "Y2")},
    }


def _policy_text(world: dict[str, object], quorum_lines: str) -> bytes:
    lines = [f"log {world['log'].verifier.encode()}"]  # type: ignore[attr-defined]
    for name in ("X1", "X2", "X3", "Y1", "Y2"):
        lines.append(f"witness {name} {world[name].key.encode()}")  # type: ignore[attr-defined]
    return ("\n".join(lines) + "\n" + quorum_lines).encode()


SPEC_QUORUM = "group X 2 X1 X2 X3\ngroup Y any Y1 Y2\ngroup XY all X Y\nquorum XY\n"


def _cosigned(world: dict[str, object], *names: str) -> str:
    note = world["log"].sign(CHECKPOINT)  # type: ignore[attr-defined]
    for name in names:
        note = world[name].cosign(note)  # type: ignore[attr-defined]
    return note


def test_spec_example_quorum_passes_and_fails(world: dict[str, object]) -> None:
    policy = parse_policy(_policy_text(world, SPEC_QUORUM))
    ok = policy.verify_checkpoint(_cosigned(world, "X1", "X3", "Y2"))
    assert ok.checkpoint == CHECKPOINT
    assert ok.cosigners == {"X1", "X3", "Y2"}
    with pytest.raises(PolicyError, match="group X has 1 of the 2"):
        policy.verify_checkpoint(_cosigned(world, "X1", "Y1", "Y2"))
    with pytest.raises(PolicyError, match="group Y has 0 of the 1"):
        policy.verify_checkpoint(_cosigned(world, "X1", "X2"))
    with pytest.raises(PolicyError, match="group XY"):
        policy.verify_checkpoint(_cosigned(world))


def test_single_witness_quorum_and_none(world: dict[str, object]) -> None:
    single = parse_policy(_policy_text(world, "quorum Y1\n"))
    single.verify_checkpoint(_cosigned(world, "Y1"))
    with pytest.raises(PolicyError, match="witness Y1 has not cosigned"):
        single.verify_checkpoint(_cosigned(world, "Y2", "X1"))
    none = parse_policy(_policy_text(world, "quorum none\n"))
    assert none.verify_checkpoint(_cosigned(world)).cosigners == frozenset()


def test_a_forged_cosignature_fails_and_an_unknown_one_is_ignored(world: dict[str, object]) -> None:
    policy = parse_policy(_policy_text(world, "quorum X1\n"))
    stranger = witness("x1.example")  # same name as X1, another key: another key hash
    policy.verify_checkpoint(stranger.cosign(_cosigned(world, "X1")))
    with pytest.raises(PolicyError):
        policy.verify_checkpoint(stranger.cosign(_cosigned(world)))
    # A cosignature of X1 over another checkpoint, pasted under this one, does not verify.
    other = world["X1"].cosign(world["log"].sign(Checkpoint(ORIGIN, 11, CHECKPOINT.root_hash)))  # type: ignore[attr-defined]
    pasted = _cosigned(world) + other.splitlines(keepends=True)[-1]
    with pytest.raises(CheckpointError, match="cosignature does not verify"):
        policy.verify_checkpoint(pasted)


def test_log_signature_key_history(world: dict[str, object]) -> None:
    old, new, stranger = world["log"], log_key(ORIGIN), log_key(ORIGIN)
    history = key_history_policy([old.verifier, new.verifier])  # type: ignore[attr-defined]
    only_old = old.sign(CHECKPOINT)  # type: ignore[attr-defined]
    both = add_signature(only_old, new)
    only_new = new.sign(CHECKPOINT)
    for note in (only_old, both, only_new):
        assert history.verify_checkpoint(note).checkpoint == CHECKPOINT
    assert history.verify_checkpoint(only_new).log_key == new.verifier
    with pytest.raises(PolicyError, match="no signature by a log key"):
        history.verify_checkpoint(stranger.sign(CHECKPOINT))
    with pytest.raises(PolicyError, match="no signature by a log key"):
        key_history_policy([new.verifier]).verify_checkpoint(only_old)
    # The log key's name must be the checkpoint's origin.
    elsewhere = log_key("other.example/log")
    with pytest.raises(PolicyError, match="no signature by a log key"):
        key_history_policy([elsewhere.verifier]).verify_checkpoint(elsewhere.sign(CHECKPOINT))


def test_bad_log_signature_is_an_error(world: dict[str, object]) -> None:
    note = world["log"].sign(CHECKPOINT)  # type: ignore[attr-defined]
    text, sig = note.rsplit("\n\n", 1)
    forged = text.replace("\n10\n", "\n11\n") + "\n\n" + sig
    with pytest.raises(CheckpointError, match="invalid"):
        key_history_policy([world["log"].verifier]).verify_checkpoint(forged)  # type: ignore[attr-defined]


def test_comments_whitespace_and_urls(world: dict[str, object]) -> None:
    text = (
        "# a comment\n\n   \t\n"
        f"  log\t{world['log'].verifier.encode()}  https://log.example/  \n"  # type: ignore[attr-defined]
        f"witness W {world['X1'].key.encode()} https://w.example/prefix\n"  # type: ignore[attr-defined]
        "   # indented comment\n"
        "quorum W"
    ).encode()
    policy = parse_policy(text)
    assert policy.quorum == "W"
    policy.verify_checkpoint(world["X1"].cosign(world["log"].sign(CHECKPOINT)))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        ("", "no quorum line"),
        ("quorum none\nquorum none\n", "exactly one quorum"),
        ("quorum Z\n", "undefined"),
        ("quorum G\ngroup G any X1\n", "undefined"),
        ("group G any Z\nquorum G\n", "not defined on an earlier line"),
        ("group G 0 X1\nquorum G\n", "threshold"),
        ("group G 3 X1 X2\nquorum G\n", "threshold"),
        ("group G 01 X1 X2\nquorum G\n", "threshold"),
        ("group G some X1\nquorum G\n", "threshold"),
        ("group G any X1 X1\nquorum G\n", "same member twice"),
        ("group G any\nquorum none\n", "expected"),
        ("group none any X1\nquorum none\n", "predefined"),
        ("group X1 any X2\nquorum none\n", "already defined"),
        ("group G any none\nquorum G\n", "not defined"),
        ("frobnicate\nquorum none\n", "unknown keyword"),
        ("quorum\n", "expected"),
        ("quorum none\x0b\n", "control character"),
        ("quorum none\r\n", "control character"),
    ],
)
def test_syntax_errors(world: dict[str, object], tail: str, problem: str) -> None:
    with pytest.raises(PolicySyntaxError, match=problem):
        parse_policy(_policy_text(world, tail))


def test_duplicate_and_wrong_type_keys(world: dict[str, object]) -> None:
    log = world["log"].verifier.encode()  # type: ignore[attr-defined]
    w = world["X1"].key.encode()  # type: ignore[attr-defined]
    with pytest.raises(PolicySyntaxError, match="log key is listed twice"):
        parse_policy(f"log {log}\nlog {log}\nquorum none\n".encode())
    with pytest.raises(PolicySyntaxError, match="witness key is listed twice"):
        parse_policy(f"witness A {w}\nwitness B {w}\nquorum none\n".encode())
    with pytest.raises(PolicySyntaxError, match="bad log key"):
        parse_policy(f"log {w}\nquorum none\n".encode())  # a cosigner key is not a log key
    with pytest.raises(PolicySyntaxError, match="bad witness key"):
        parse_policy(f"witness A {log}\nquorum none\n".encode())
    with pytest.raises(PolicySyntaxError, match="line 2: bad log key"):
        parse_policy(f"\nlog {log[:-2]}xx\nquorum none\n".encode())


def test_non_ascii_names_are_opaque_octets(world: dict[str, object]) -> None:
    w = world["X1"].key.encode()  # type: ignore[attr-defined]
    kelvin = "\u212a".encode()
    text = b"witness K " + w.encode() + b"\ngroup " + kelvin + b" any K\nquorum " + kelvin + b"\n"
    assert parse_policy(text).quorum == kelvin.decode()
    with pytest.raises(PolicySyntaxError, match="undefined"):
        parse_policy(text.replace(b"quorum " + kelvin, b"quorum K\xe2"))


def test_a_policy_without_logs_cannot_verify(world: dict[str, object]) -> None:
    policy = parse_policy(b"quorum none\n")
    with pytest.raises(PolicyError, match="no log key"):
        policy.verify_checkpoint(world["log"].sign(CHECKPOINT))  # type: ignore[attr-defined]
