"""Proof bundles: C2SP ``c2sp.org/tlog-proof@v1``, an offline-verifiable proof that one entry is
in the log, as witnessed (DESIGN §7).

Format (tlog-proof "Format"), lines separated by ``\\n``::

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry's leaf bytes>
    index <leaf index, decimal, no leading zero>
    <base64 inclusion proof hash>      (zero or more, RFC 6962 §2.1.1 order)
    <empty line>
    <the checkpoint note, verbatim, with every signature and cosignature line>

The spec leaves the ``extra`` line to the application; we carry the entry's leaf bytes there
(DESIGN §3: the JCS canonical header), so that the bundle alone proves *which* entry is logged.
The spec says extra data is not authenticated and must not be trusted implicitly: here it is
not trusted, it is hashed (RFC 9162 §2.1.1) and the inclusion proof must lead from that leaf
hash to the signed root. A bundle without ``extra`` is valid too; its verifier must then bring
the leaf bytes itself.

Parsing is strict (one byte representation per bundle: canonical base64, no leading zeros, the
exact header line, a final newline), so that any change to a byte of the bundle either breaks
the parse, the root, or a signature the policy requires.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from audit_ledger.core.checkpoint import Checkpoint, split_note
from audit_ledger.core.merkle import HASH_SIZE, leaf_hash, root_from_inclusion_proof
from audit_ledger.core.policy import TlogPolicy, VerifiedCheckpoint
from audit_ledger.errors import BundleError, CheckpointError, ProofError

HEADER = "c2sp.org/tlog-proof@v1"
#: tlog-proof "Proofs SHOULD be stored with file extension .tlog-proof".
FILE_SUFFIX = ".tlog-proof"
_INDEX = re.compile(r"index (0|[1-9][0-9]{0,19})\Z")
#: Larger than any proof of a log under 2^64 entries, smaller than anything abusive.
_MAX_PROOF = 64


@dataclass(frozen=True, slots=True)
class ProofBundle:
    """The parts of a tlog-proof bundle."""

    index: int
    proof: tuple[bytes, ...]
    note: str
    extra: bytes | None = None

    def encode(self) -> str:
        """The bundle text (tlog-proof "Format")."""
        return encode_bundle(self.index, self.proof, self.note, self.extra)


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """What a verified bundle proves: leaf ``leaf`` is entry ``index`` of ``checkpoint``."""

    index: int
    leaf: bytes
    checkpoint: Checkpoint
    verified: VerifiedCheckpoint


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def encode_bundle(
    index: int, proof: tuple[bytes, ...] | list[bytes], note: str, extra: bytes | None
) -> str:
    """Format a bundle; the note must be a syntactically valid signed note."""
    if index < 0 or any(len(h) != HASH_SIZE for h in proof):
        raise BundleError("a bundle needs a non-negative index and 32-byte proof hashes")
    try:
        split_note(note)
    except CheckpointError as exc:
        raise BundleError(f"the checkpoint is not a signed note: {exc}") from None
    lines = [HEADER]
    if extra is not None:
        lines.append(f"extra {_b64(extra)}")
    lines.append(f"index {index}")
    lines.extend(_b64(h) for h in proof)
    return "\n".join(lines) + "\n\n" + note


def _decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BundleError(f"{what} is not standard base64") from None
    if _b64(raw) != text:  # one encoding per value: no unused bits, padding as required
        raise BundleError(f"{what} is not canonical base64")
    return raw


def parse_bundle(data: bytes | str) -> ProofBundle:
    """Parse a bundle strictly; :class:`BundleError` says what is wrong."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError("the bundle is not UTF-8 text") from None
    head, sep, note = data.partition("\n\n")
    if not sep:
        raise BundleError("the bundle has no empty line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise BundleError(f"the bundle does not start with {HEADER}")
    extra = None
    rest = lines[1:]
    if rest and rest[0].startswith("extra "):
        extra = _decode(rest[0][len("extra ") :], "the extra data")
        rest = rest[1:]
    if not rest:
        raise BundleError("the bundle has no index line")
    match = _INDEX.match(rest[0])
    if match is None:
        raise BundleError("the index line must be 'index <decimal, no leading zeros>'")
    if len(rest) - 1 > _MAX_PROOF:
        raise BundleError("the inclusion proof is too long")
    proof = tuple(_decode(line, "an inclusion proof hash") for line in rest[1:])
    if any(len(h) != HASH_SIZE for h in proof):
        raise BundleError("an inclusion proof hash is not 32 bytes")
    try:
        split_note(note)
    except CheckpointError as exc:
        raise BundleError(f"the bundle's checkpoint is malformed: {exc}") from None
    return ProofBundle(int(match.group(1)), proof, note, extra)


def verify_bundle(
    data: bytes | str, policy: TlogPolicy, leaf: bytes | None = None
) -> VerifiedBundle:
    """Verify a bundle offline against ``policy``.

    The checkpoint must satisfy the policy (a log signature and the witness quorum), and the
    inclusion proof must lead from the leaf hash of the entry's bytes (the bundle's ``extra``,
    or ``leaf`` when given; both given must agree) to the checkpoint's root (RFC 9162
    §2.1.3.2). Raises :class:`BundleError`, or :class:`~audit_ledger.errors.PolicyError` /
    :class:`~audit_ledger.errors.CheckpointError` for the checkpoint.
    """
    bundle = parse_bundle(data)
    if leaf is None:
        leaf = bundle.extra
    elif bundle.extra is not None and bundle.extra != leaf:
        raise BundleError("the bundle's leaf bytes are not the entry given")
    if leaf is None:
        raise BundleError("the bundle carries no leaf bytes (extra) and none were given")
    verified = policy.verify_checkpoint(bundle.note)
    checkpoint = verified.checkpoint
    if bundle.index >= checkpoint.size:
        raise BundleError(
            f"index {bundle.index} is outside the checkpoint's tree of {checkpoint.size}"
        )
    try:
        root = root_from_inclusion_proof(
            bundle.index, checkpoint.size, leaf_hash(leaf), bundle.proof
        )
    except ProofError as exc:
        raise BundleError(f"the inclusion proof is malformed: {exc}") from None
    if root != checkpoint.root_hash:
        raise BundleError("the inclusion proof does not lead to the checkpoint's root")
    return VerifiedBundle(bundle.index, leaf, checkpoint, verified)
