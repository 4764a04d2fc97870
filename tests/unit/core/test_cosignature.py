"""tlog-cosignature v1 with Ed25519 (audit_ledger.core.cosignature), checked against the C2SP
spec's text and with plain ``cryptography`` Ed25519 — no code of ours on the verifying side.

The spec's example cosignature (``— witness.example.com/w1 jWbPPw…``) comes without its public
key, so it is used for what it does pin down: the blob layout (key ID, 8-byte big-endian time,
64-byte signature) and the signed message of its "Ed25519 signed message" section.
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit_ledger.core.checkpoint import split_note
from audit_ledger.core.cosignature import (
    cosign,
    cosignature_message,
    make_cosigner_key,
    parse_cosigner_key,
    verified_cosignatures,
)
from audit_ledger.errors import CheckpointError

SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_BODY
    + "\n\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u"
    "5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlr"
    "DJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
NAME = "witness.example/w1"


def test_message_is_the_spec_example() -> None:
    expected = (
        "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert cosignature_message(SPEC_BODY, 1679315147) == expected.encode()


def test_spec_example_blob_layout() -> None:
    _, sigs = split_note(SPEC_NOTE)
    blob = sigs[1].blob
    assert len(blob) == 4 + 8 + 64
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    assert timestamp == 1679315147  # the time of the spec's own message example


def test_our_cosignature_verifies_with_plain_ed25519() -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    key = make_cosigner_key(NAME, public)
    # key ID per spec: SHA-256(name || "\n" || 0x04 || public key)[:4]
    assert key.key_hash == hashlib.sha256(NAME.encode() + b"\n\x04" + public).digest()[:4]
    line = cosign(SPEC_BODY, key, private.sign, 1_700_000_123).line()
    assert line.startswith(f"\u2014 {NAME} ")
    blob = base64.b64decode(line.rstrip("\n").split(" ")[2])
    assert blob[:4] == key.key_hash
    assert int.from_bytes(blob[4:12], "big") == 1_700_000_123
    message = f"cosignature/v1\ntime 1700000123\n{SPEC_BODY}".encode()
    Ed25519PublicKey.from_public_bytes(public).verify(blob[12:], message)
    with pytest.raises(InvalidSignature):  # the time is signed
        Ed25519PublicKey.from_public_bytes(public).verify(
            blob[12:], message.replace(b"1700000123", b"1700000124")
        )


def test_verified_cosignatures_checks_ours_and_ignores_others() -> None:
    private = Ed25519PrivateKey.generate()
    key = make_cosigner_key(NAME, private.public_key().public_bytes_raw())
    ours = cosign(SPEC_BODY, key, private.sign, 5).line()
    (found,) = verified_cosignatures(SPEC_NOTE + ours, [key])  # the spec's lines are ignored
    assert found.timestamp == 5
    other_body = SPEC_BODY.replace("20852163", "20852164")
    moved = other_body + SPEC_NOTE[len(SPEC_BODY) :] + ours
    with pytest.raises(CheckpointError):  # our line on another checkpoint: a forgery
        verified_cosignatures(moved, [key])


def test_verifier_key_round_trip_and_type() -> None:
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    key = make_cosigner_key(NAME, public)
    text = key.encode()
    name, hash_hex, blob = text.split("+", 2)
    assert (name, hash_hex) == (NAME, key.key_hash.hex())
    assert base64.b64decode(blob) == b"\x04" + public
    assert parse_cosigner_key(text) == key
    log_hash = hashlib.sha256(NAME.encode() + b"\n\x01" + public).digest()[:4].hex()
    log_key = f"{NAME}+{log_hash}+"
    with pytest.raises(CheckpointError):  # a type-0x01 (log) key is not a cosigner key
        parse_cosigner_key(log_key + base64.b64encode(b"\x01" + public).decode())
    with pytest.raises(CheckpointError):
        cosignature_message(SPEC_BODY, -1)
