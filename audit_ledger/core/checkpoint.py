"""Checkpoints (C2SP tlog-checkpoint) signed as C2SP signed-notes with Ed25519 (DESIGN §3).

Body: ``<origin>\\n<tree size>\\n<base64 root hash>\\n``. Note: body, a blank line, then one line
per signature: ``— <key name> <base64(4-byte key hash || 64-byte signature)>\\n`` (U+2014).
Key hash: first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key). Verifier key:
``<name>+<8 hex key hash>+<base64(0x01 || public key)>`` as ``golang.org/x/mod/sumdb/note``
reads it. Signing is done by a function passed in, so this module holds no private key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit_ledger.core.merkle import HASH_SIZE
from audit_ledger.errors import CheckpointError

ALG_ED25519 = 0x01
_EM_DASH = "\u2014"
# sumdb/note: names are non-empty, without spaces or "+" (and no other Unicode space).
_NAME = re.compile(r"[^\s+]+\Z")
_SIZE = re.compile(r"(0|[1-9][0-9]{0,19})\Z")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint body."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The checkpoint body text (what is signed)."""
        return checkpoint_body(self.origin, self.size, self.root_hash, self.extensions)


def check_key_name(name: str) -> str:
    """Return ``name`` if it is a valid note key name / origin, else :class:`CheckpointError`."""
    if not isinstance(name, str) or not _NAME.match(name) or _has_control(name):
        raise CheckpointError("key name must be non-empty, without spaces or '+'")
    return name


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text if c != "\n")


def checkpoint_body(
    origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...] = ()
) -> str:
    """Format a checkpoint body (C2SP tlog-checkpoint)."""
    check_key_name(origin)
    if size < 0 or len(root_hash) != HASH_SIZE:
        raise CheckpointError("checkpoint needs a non-negative size and a 32-byte root")
    lines = [origin, str(size), base64.b64encode(root_hash).decode("ascii"), *extensions]
    return "\n".join(lines) + "\n"


def parse_checkpoint_body(body: str) -> Checkpoint:
    """Parse a checkpoint body; raise :class:`CheckpointError` on any deviation."""
    if not body.endswith("\n"):
        raise CheckpointError("checkpoint body must end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint body needs origin, size and root hash lines")
    origin, size_text, root_text, *extensions = lines
    if any(not line for line in extensions):
        raise CheckpointError("checkpoint extension lines must not be empty")
    check_key_name(origin)
    if not _SIZE.match(size_text):
        raise CheckpointError("checkpoint tree size is not a decimal integer")
    root = _b64decode(root_text, "root hash")
    if len(root) != HASH_SIZE:
        raise CheckpointError("checkpoint root hash is not 32 bytes")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CheckpointError(f"{what} is not standard base64") from None
    # Reject non-canonical encodings so that every note has exactly one byte representation.
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def typed_key_hash(name: str, key_type: int, public_key: bytes) -> bytes:
    """signed-note key ID: first 4 bytes of SHA-256(name || "\\n" || type || public key)."""
    material = name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key
    return hashlib.sha256(material).digest()[:4]


def key_hash(name: str, public_key: bytes) -> bytes:
    """First 4 bytes of SHA-256(name || "\\n" || 0x01 || public key)."""
    return typed_key_hash(name, ALG_ED25519, public_key)


@dataclass(frozen=True, slots=True)
class Verifier:
    """A note verifier key: name, key hash and Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: bytes

    def encode(self) -> str:
        """``<name>+<8 hex key hash>+<base64(0x01 || public key)>``."""
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_hash.hex()}+{blob}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def make_verifier(name: str, public_key: bytes) -> Verifier:
    """Verifier for an Ed25519 public key (32 raw bytes) under ``name``."""
    check_key_name(name)
    if len(public_key) != 32:
        raise CheckpointError("Ed25519 public key must be 32 bytes")
    return Verifier(name, key_hash(name, public_key), public_key)


def parse_vkey(text: str) -> tuple[str, int, bytes]:
    """Parse any signed-note verifier key ``<name>+<hash>+<base64(type || key)>``.

    Returns ``(name, key type, public key)`` once the key hash matches the name, type and key.
    """
    parts = text.strip().split("+", 2)  # the base64 key may itself contain "+"
    if len(parts) != 3:
        raise CheckpointError("verifier key must be <name>+<hash>+<key>")
    name, hash_hex, key_b64 = parts
    check_key_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise CheckpointError("verifier key hash must be 8 lower-case hex digits")
    raw = _b64decode(key_b64, "verifier key")
    if len(raw) < 2:
        raise CheckpointError("verifier key is too short")
    if typed_key_hash(name, raw[0], raw[1:]).hex() != hash_hex:
        raise CheckpointError("verifier key hash does not match its name and key")
    return name, raw[0], raw[1:]


def parse_verifier_key(text: str) -> Verifier:
    """Parse an Ed25519 (type 0x01) note verifier key; the hash must match the name and key."""
    name, alg, public_key = parse_vkey(text)
    if alg != ALG_ED25519 or len(public_key) != 32:
        raise CheckpointError("verifier key is not an Ed25519 key")
    return make_verifier(name, public_key)


def sign_note(text: str, verifier: Verifier, sign: Callable[[bytes], bytes]) -> str:
    """Sign note ``text`` with ``sign`` (Ed25519 over the UTF-8 text) and return the note."""
    _check_text(text)
    signature = sign(text.encode("utf-8"))
    if len(signature) != 64 or not verifier.verify(text.encode("utf-8"), signature):
        raise CheckpointError("signing function does not match the verifier key")
    blob = base64.b64encode(verifier.key_hash + signature).decode("ascii")
    return f"{text}\n{_EM_DASH} {verifier.name} {blob}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise CheckpointError("note text must end with a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise CheckpointError("note text must not contain blank lines")
    if _has_control(text):
        raise CheckpointError("note text must not contain control characters")


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a signed note: key name and the decoded blob (key hash first)."""

    name: str
    blob: bytes

    @property
    def key_hash(self) -> bytes:
        return self.blob[:4]

    def line(self) -> str:
        """The signature line as it appears in a note, newline included."""
        return f"{_EM_DASH} {self.name} {base64.b64encode(self.blob).decode('ascii')}\n"


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines, checking only their syntax.

    As ``sumdb/note.Open``: the text runs up to the last blank line; every line after it must
    be ``— <name> <base64>`` with a blob of at least 5 bytes (key hash and signature).
    """
    if not isinstance(note, str):
        raise CheckpointError("note must be text")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("note has no signature block")
    text, sigs = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not sigs.endswith("\n"):
        raise CheckpointError("note signature block must end with a newline")
    signatures = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(_EM_DASH + " "):
            raise CheckpointError("malformed signature line")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise CheckpointError("malformed signature line")
        name, blob_text = fields
        check_key_name(name)
        blob = _b64decode(blob_text, "signature")
        if len(blob) < 5:
            raise CheckpointError("signature is too short")
        signatures.append(NoteSignature(name, blob))
    return text, signatures


def join_note(text: str, signatures: list[NoteSignature]) -> str:
    """A note from its text and signature lines (duplicates dropped, order kept)."""
    _check_text(text)
    if not signatures:
        raise CheckpointError("a signed note needs at least one signature")
    lines = list(dict.fromkeys(sig.line() for sig in signatures))
    return text + "\n" + "".join(lines)


def open_note(note: str, verifier: Verifier) -> str:
    """Verify a signed note against ``verifier`` and return its text.

    Follows ``sumdb/note.Open``: text up to the last blank line, then signature lines; a
    signature by another key is ignored, one by our key name and hash must verify.
    """
    text, signatures = split_note(note)
    message = text.encode("utf-8")
    verified = False
    for sig in signatures:
        if sig.name != verifier.name or sig.key_hash != verifier.key_hash:
            continue
        if len(sig.blob) != 68 or not verifier.verify(message, sig.blob[4:]):
            raise CheckpointError("checkpoint signature does not verify")
        verified = True
    if not verified:
        raise CheckpointError("note has no signature by the verifier key")
    return text


def verify_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    """Verify a signed checkpoint note and parse its body; the origin must be the key name."""
    checkpoint = parse_checkpoint_body(open_note(note, verifier))
    if checkpoint.origin != verifier.name:
        raise CheckpointError("checkpoint origin does not match the verifier key name")
    return checkpoint
