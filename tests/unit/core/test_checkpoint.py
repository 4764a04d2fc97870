"""Checkpoints as C2SP signed notes with Ed25519 (audit_ledger.core.checkpoint), DESIGN §3.

Known answers come from Go's ``golang.org/x/mod/sumdb/note`` (``note_test.go``: TestNewVerifier,
TestSign, TestOpen): the PeterNeumann and EnochRoot example keys, the signed message text and the
signature lines. Ed25519 is deterministic (RFC 8032), so signing that text with the documented
seed must reproduce Go's note byte for byte.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core.checkpoint import (
    Checkpoint,
    Verifier,
    check_key_name,
    checkpoint_body,
    key_hash,
    make_verifier,
    open_note,
    parse_checkpoint_body,
    parse_verifier_key,
    sign_note,
    verify_checkpoint,
)
from audit_ledger.errors import CheckpointError

# --- golang.org/x/mod/sumdb/note note_test.go ---------------------------------------------------

GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
GO_PETER_SIG = "\u2014 PeterNeumann " + GO_PETER_B64 + "\n"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_ENOCH_SIG = (
    "\u2014 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
GO_NOTE = GO_TEXT + "\n" + GO_PETER_SIG

ORIGIN = "audit.quickcart.example/ledger"
ROOT = hashlib.sha256(b"some root").digest()


def _go_seed() -> bytes:
    # PRIVATE+KEY+<name>+<hash>+base64(0x01 || 32-byte Ed25519 seed); the base64 may contain "+".
    prefix, key, name, hash_hex, blob = GO_SKEY.split("+", 4)
    assert (prefix, key, name, hash_hex) == ("PRIVATE", "KEY", "PeterNeumann", "c74f20a3")
    raw = base64.b64decode(blob, validate=True)
    assert len(raw) == 33
    assert raw[0] == 0x01
    return raw[1:]


def _public(priv: Ed25519PrivateKey) -> bytes:
    return priv.public_key().public_bytes_raw()


@pytest.fixture
def key() -> tuple[Ed25519PrivateKey, Verifier]:
    priv = Ed25519PrivateKey.generate()
    return priv, make_verifier(ORIGIN, _public(priv))


def _sign_checkpoint(
    priv: Ed25519PrivateKey, verifier: Verifier, size: int = 42, root: bytes = ROOT
) -> str:
    return sign_note(checkpoint_body(verifier.name, size, root), verifier, priv.sign)


# --- Go known answers ---------------------------------------------------------------------------


def test_go_verifier_key_parses() -> None:
    verifier = parse_verifier_key(GO_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_hash == bytes.fromhex("c74f20a3")
    assert key_hash("PeterNeumann", verifier.public_key) == bytes.fromhex("c74f20a3")
    assert verifier.encode() == GO_VKEY
    assert parse_verifier_key(GO_ENOCH_VKEY).key_hash == bytes.fromhex("af0cfe78")


def test_go_signer_key_reproduces_the_go_signature() -> None:
    verifier = parse_verifier_key(GO_VKEY)
    priv = Ed25519PrivateKey.from_private_bytes(_go_seed())
    assert _public(priv) == verifier.public_key
    assert make_verifier("PeterNeumann", _public(priv)) == verifier
    assert sign_note(GO_TEXT, verifier, priv.sign) == GO_NOTE


def test_go_note_opens() -> None:
    assert open_note(GO_NOTE, parse_verifier_key(GO_VKEY)) == GO_TEXT


def test_go_note_with_two_signatures() -> None:
    peter, enoch = parse_verifier_key(GO_VKEY), parse_verifier_key(GO_ENOCH_VKEY)
    note = GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG
    assert open_note(note, peter) == GO_TEXT  # Enoch's line is ignored
    assert open_note(note, enoch) == GO_TEXT  # Peter's line is ignored
    with pytest.raises(CheckpointError):
        open_note(GO_TEXT + "\n" + GO_ENOCH_SIG, peter)  # signed by another key only
    with pytest.raises(CheckpointError):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), peter)


def test_go_invalid_signature() -> None:
    # TestOpen "Invalid signature": four base64 characters inserted into Peter's signature.
    bad = GO_TEXT + "\n" + GO_PETER_SIG[:60] + "ABCD" + GO_PETER_SIG[60:]
    with pytest.raises(CheckpointError):
        open_note(bad, parse_verifier_key(GO_VKEY))


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + GO_PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + GO_PETER_SIG,
        GO_TEXT + "\n" + "\u2014 Bad Name " + GO_PETER_B64,
        GO_TEXT + "\n" + GO_PETER_SIG + "Unexpected line.\n",
        # and a few more of our own
        GO_TEXT + "\n" + GO_PETER_SIG.replace("\u2014", "-"),
        GO_TEXT + "\n" + GO_PETER_SIG.replace("\u2014 ", "\u2014"),
        GO_TEXT + "\n" + GO_PETER_SIG.replace(" x08go", "  x08go"),
        GO_TEXT + "\n" + GO_PETER_SIG.replace("AM=", "AM"),
        GO_TEXT + "\n" + GO_PETER_SIG + "\n",
        GO_TEXT + "\n\n" + GO_PETER_SIG,
        "\n" + GO_TEXT + "\n" + GO_PETER_SIG,
        GO_TEXT.replace("\n", "\r\n") + "\n" + GO_PETER_SIG,
        "",
    ],
)
def test_go_malformed_notes(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_note(note, parse_verifier_key(GO_VKEY))


def test_go_verifier_key_manglings_are_rejected() -> None:
    # TestNewVerifier: every proper substring and every single-byte increment must fail.
    b = GO_VKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if i != 0 or j != len(b):
                with pytest.raises(CheckpointError):
                    parse_verifier_key(b[i:j].decode())
    for i in range(len(b)):
        mangled = bytearray(b)
        mangled[i] += 1
        with pytest.raises(CheckpointError):
            parse_verifier_key(mangled.decode())
    for bad in (
        # wrong length key, with adjusted key hash
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        # unknown algorithm, with adjusted key hash
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(CheckpointError):
            parse_verifier_key(bad)


# --- our own keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "extensions"), [(1, ()), (42, ()), (2**53 - 1, ()), (7, ("ext one", "\u00e9xt"))]
)
def test_checkpoint_round_trip(
    key: tuple[Ed25519PrivateKey, Verifier], size: int, extensions: tuple[str, ...]
) -> None:
    priv, verifier = key
    body = checkpoint_body(ORIGIN, size, ROOT, extensions)
    assert body == f"{ORIGIN}\n{size}\n{base64.b64encode(ROOT).decode()}\n" + "".join(
        e + "\n" for e in extensions
    )
    note = sign_note(body, verifier, priv.sign)
    assert note.startswith(body + "\n\u2014 " + ORIGIN + " ")
    checkpoint = verify_checkpoint(note, verifier)
    assert checkpoint == Checkpoint(ORIGIN, size, ROOT, extensions)
    assert checkpoint.body() == body
    assert open_note(note, verifier) == body
    assert parse_checkpoint_body(body) == checkpoint


def test_signature_line_format(key: tuple[Ed25519PrivateKey, Verifier]) -> None:
    priv, verifier = key
    body = checkpoint_body(ORIGIN, 3, ROOT)
    note = _sign_checkpoint(priv, verifier, 3)
    line = note[len(body) + 1 :]
    assert line.startswith("\u2014 ")
    assert line.endswith("\n")
    name, blob = line[2:-1].split(" ")
    assert name == ORIGIN
    raw = base64.b64decode(blob, validate=True)
    assert len(raw) == 68
    assert raw[:4] == verifier.key_hash
    assert raw[4:] == priv.sign(body.encode())
    material = ORIGIN.encode() + b"\n\x01" + verifier.public_key
    assert verifier.key_hash == hashlib.sha256(material).digest()[:4]


def test_every_body_change_is_rejected(key: tuple[Ed25519PrivateKey, Verifier]) -> None:
    priv, verifier = key
    note = _sign_checkpoint(priv, verifier)
    body_len = len(checkpoint_body(ORIGIN, 42, ROOT))
    data = note.encode()
    assert len(data) > body_len
    for i in range(body_len):  # the body is ASCII: byte i is character i
        for delta in (0x01, 0x20):
            mangled = bytearray(data)
            mangled[i] ^= delta
            with pytest.raises(CheckpointError):
                verify_checkpoint(mangled.decode(), verifier)


def test_every_signature_change_is_rejected(key: tuple[Ed25519PrivateKey, Verifier]) -> None:
    priv, verifier = key
    note = _sign_checkpoint(priv, verifier)
    body, line = note.split("\n\n")
    blob = line.split(" ")[2].rstrip("\n")
    raw = base64.b64decode(blob)
    for i in range(len(raw)):  # every byte of key hash and signature
        bad = bytearray(raw)
        bad[i] ^= 0x01
        mangled = note.replace(blob, base64.b64encode(bytes(bad)).decode())
        with pytest.raises(CheckpointError):
            verify_checkpoint(mangled, verifier)
    start = len(body) + 2
    for i in range(start, len(note)):  # every character of the signature line
        c = note[i]
        replacement = "A" if c != "A" else "B"
        mangled = note[:i] + replacement + note[i + 1 :]
        with pytest.raises(CheckpointError):
            verify_checkpoint(mangled, verifier)
    with pytest.raises(CheckpointError):
        verify_checkpoint(note.replace(blob, base64.b64encode(raw[:-1]).decode()), verifier)
    with pytest.raises(CheckpointError):
        verify_checkpoint(note.replace(blob, base64.b64encode(raw + b"\x00").decode()), verifier)


def test_signed_by_another_key_only(key: tuple[Ed25519PrivateKey, Verifier]) -> None:
    _, verifier = key
    other = Ed25519PrivateKey.generate()
    same_name = make_verifier(ORIGIN, _public(other))
    with pytest.raises(CheckpointError):
        verify_checkpoint(_sign_checkpoint(other, same_name), verifier)
    other_name = make_verifier("other.example/log", _public(other))
    note = sign_note(checkpoint_body(ORIGIN, 42, ROOT), other_name, other.sign)
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, verifier)


def test_extra_signatures_by_other_keys_are_ignored(
    key: tuple[Ed25519PrivateKey, Verifier],
) -> None:
    priv, verifier = key
    body = checkpoint_body(ORIGIN, 42, ROOT)
    ours = sign_note(body, verifier, priv.sign)[len(body) + 1 :]
    witness = Ed25519PrivateKey.generate()
    theirs = sign_note(body, make_verifier("witness.example", _public(witness)), witness.sign)
    theirs_line = theirs[len(body) + 1 :]
    # Same name, different key: a different key hash, so also not ours.
    rogue = Ed25519PrivateKey.generate()
    rogue_line = sign_note(body, make_verifier(ORIGIN, _public(rogue)), rogue.sign)[len(body) + 1 :]
    # A signature line with an unknown (non-Ed25519-sized) blob by another name is skipped too.
    odd_line = (
        "\u2014 cosigner.example "
        + base64.b64encode(b"\x01\x02\x03\x04" + b"x" * 72).decode()
        + "\n"
    )
    for lines in (
        theirs_line + ours,
        ours + theirs_line,
        rogue_line + ours + odd_line,
        theirs_line + rogue_line + ours + odd_line,
    ):
        assert verify_checkpoint(body + "\n" + lines, verifier) == Checkpoint(ORIGIN, 42, ROOT)
    with pytest.raises(CheckpointError):
        verify_checkpoint(body + "\n" + theirs_line + rogue_line + odd_line, verifier)


def test_bad_signature_by_our_key_is_fatal_even_beside_a_good_one(
    key: tuple[Ed25519PrivateKey, Verifier],
) -> None:
    priv, verifier = key
    body = checkpoint_body(ORIGIN, 42, ROOT)
    good = sign_note(body, verifier, priv.sign)[len(body) + 1 :]
    other_body = checkpoint_body(ORIGIN, 43, ROOT)
    wrong = sign_note(other_body, verifier, priv.sign)[len(other_body) + 1 :]
    with pytest.raises(CheckpointError):
        verify_checkpoint(body + "\n" + good + wrong, verifier)


def test_origin_must_be_the_key_name(key: tuple[Ed25519PrivateKey, Verifier]) -> None:
    priv, verifier = key
    note = sign_note(checkpoint_body("another.origin", 42, ROOT), verifier, priv.sign)
    assert open_note(note, verifier)  # the signature itself is fine
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, verifier)


def test_note_that_is_not_a_checkpoint(key: tuple[Ed25519PrivateKey, Verifier]) -> None:
    priv, verifier = key
    for text in (GO_TEXT, f"{ORIGIN}\n", f"{ORIGIN}\n42\n", f"{ORIGIN}\n42\nnot base64!\n"):
        note = sign_note(text, verifier, priv.sign)
        with pytest.raises(CheckpointError):
            verify_checkpoint(note, verifier)


@settings(max_examples=100, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), name=st.sampled_from([ORIGIN, "a", "log\u00e9"]))
def test_verifier_key_round_trips(seed: bytes, name: str) -> None:
    # About half of all keys have a "+" in their base64: the parser must split only twice.
    public = _public(Ed25519PrivateKey.from_private_bytes(seed))
    verifier = make_verifier(name, public)
    text = verifier.encode()
    assert parse_verifier_key(text) == verifier
    assert parse_verifier_key(text + "\n") == verifier
    prefix, hash_hex, blob = text.split("+", 2)
    assert prefix == name
    assert hash_hex == verifier.key_hash.hex()
    assert base64.b64decode(blob) == b"\x01" + public
    wrong = format(int(hash_hex, 16) ^ 1, "08x")
    with pytest.raises(CheckpointError):
        parse_verifier_key(f"{name}+{wrong}+{blob}")
    with pytest.raises(CheckpointError):
        parse_verifier_key(f"{name}x+{hash_hex}+{blob}")


def test_verifier_key_with_plus_in_base64() -> None:
    # A deterministic case of the above: this public key's base64 contains "+".
    seed = bytes(range(32))
    for i in range(256):
        public = _public(Ed25519PrivateKey.from_private_bytes(bytes([i]) + seed[1:]))
        verifier = make_verifier(ORIGIN, public)
        if "+" in verifier.encode().split("+", 2)[2]:
            break
    else:  # pragma: no cover
        pytest.fail("no key with '+' in its base64 found")
    assert parse_verifier_key(verifier.encode()) == verifier


@pytest.mark.parametrize(
    "text",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a30+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq_LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW+",
        "PeterNeumann+c74f20a3+\u00c4Rpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_verifier_keys(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse_verifier_key(text)


# --- construction and parsing errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "has space", "a+b", "tab\tname", "new\nline", "nbsp\u00a0x", "ctl\x01", "del\x7f"]
)
def test_bad_key_names(name: str) -> None:
    with pytest.raises(CheckpointError):
        check_key_name(name)
    with pytest.raises(CheckpointError):
        make_verifier(name, b"\x00" * 32)
    with pytest.raises(CheckpointError):
        checkpoint_body(name, 1, ROOT)


def test_make_verifier_needs_32_byte_key() -> None:
    for public in (b"", b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(CheckpointError):
            make_verifier(ORIGIN, public)


@pytest.mark.parametrize(("size", "root"), [(-1, ROOT), (1, ROOT[:31]), (1, ROOT + b"\x00")])
def test_checkpoint_body_errors(size: int, root: bytes) -> None:
    with pytest.raises(CheckpointError):
        checkpoint_body(ORIGIN, size, root)


_ROOT_B64 = base64.b64encode(ROOT).decode()
_URLSAFE_B64 = base64.urlsafe_b64encode(b"\xff" * 32).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n42\n{_ROOT_B64}",  # no final newline
        f"{ORIGIN}\n42\n",
        f"{ORIGIN}\n",
        "",
        f"{ORIGIN}\n042\n{_ROOT_B64}\n",
        f"{ORIGIN}\n-1\n{_ROOT_B64}\n",
        f"{ORIGIN}\n+1\n{_ROOT_B64}\n",
        f"{ORIGIN}\n1.0\n{_ROOT_B64}\n",
        f"{ORIGIN}\n 42\n{_ROOT_B64}\n",
        f"{ORIGIN}\n\n{_ROOT_B64}\n",
        f"{ORIGIN}\n\u0664\u0662\n{_ROOT_B64}\n",
        f"{ORIGIN}\n42\n{_ROOT_B64[:-1]}\n",
        f"{ORIGIN}\n42\n{_ROOT_B64.rstrip('=')}\n",
        f"{ORIGIN}\n42\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"{ORIGIN}\n42\n{_URLSAFE_B64}\n",
        f"{ORIGIN}\n42\n{_ROOT_B64}\n\n",  # empty extension line
        f"{ORIGIN}\n42\n{_ROOT_B64}\next\n\n",
        f"bad origin\n42\n{_ROOT_B64}\n",
        f"\n42\n{_ROOT_B64}\n",
    ],
)
def test_parse_checkpoint_body_errors(body: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint_body(body)


def test_parse_checkpoint_body_non_canonical_base64() -> None:
    # "AB==" and "AA==" decode to the same byte when the unused bits are ignored.
    root = bytes(31) + b"\x00"
    text = base64.b64encode(root).decode()
    assert text.endswith("A=")
    non_canonical = text[:-2] + "B="
    assert base64.b64decode(non_canonical) == root
    with pytest.raises(CheckpointError):
        parse_checkpoint_body(f"{ORIGIN}\n1\n{non_canonical}\n")


@pytest.mark.parametrize(
    "text",
    ["no newline", "blank\n\nline\n", "\nleading\n", "ctl\x00\n", "esc\x1b[0m\n", "c1\x85\n", ""],
)
def test_sign_note_rejects_bad_text(key: tuple[Ed25519PrivateKey, Verifier], text: str) -> None:
    priv, verifier = key
    with pytest.raises(CheckpointError):
        sign_note(text, verifier, priv.sign)


def test_sign_note_rejects_a_signer_that_does_not_match(
    key: tuple[Ed25519PrivateKey, Verifier],
) -> None:
    _, verifier = key
    other = Ed25519PrivateKey.generate()
    body = checkpoint_body(ORIGIN, 1, ROOT)
    with pytest.raises(CheckpointError):
        sign_note(body, verifier, other.sign)
    with pytest.raises(CheckpointError):
        sign_note(body, verifier, lambda message: b"\x00" * 64)
    with pytest.raises(CheckpointError):
        sign_note(body, verifier, lambda message: b"short")


def test_open_note_rejects_non_text(key: tuple[Ed25519PrivateKey, Verifier]) -> None:
    priv, verifier = key
    note = _sign_checkpoint(priv, verifier)
    with pytest.raises(CheckpointError):
        open_note(note.encode(), verifier)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError):
        verify_checkpoint(None, verifier)  # type: ignore[arg-type]
