"""The C2SP tlog-witness v1 wire format (``add-checkpoint``), shared by the witness and the log.

Request body (tlog-witness "add-checkpoint"): an old size line ``old <decimal>\\n`` (no leading
zeros), at most 63 consistency proof lines (one base64 hash each), an empty line, then the signed
checkpoint note. A 409 answer carries ``<decimal size>\\n`` as ``text/x.tlog.size``; a 200 answer
is one or more note signature lines (the cosignatures).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from audit_ledger.core.checkpoint import NoteSignature, split_note
from audit_ledger.core.merkle import HASH_SIZE
from audit_ledger.errors import CheckpointError

#: tlog-witness: "The client MUST NOT send more than 63 consistency proof lines."
MAX_PROOF_LINES = 63
#: Content type of a 409 answer's body (tlog-witness).
SIZE_CONTENT_TYPE = "text/x.tlog.size"

_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,19})\Z")


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed ``add-checkpoint`` request: old size, consistency proof and the note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


def _decimal(text: str, what: str) -> int:
    if not _DECIMAL.match(text):
        raise CheckpointError(f"{what} is not a decimal without leading zeros")
    return int(text)


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The request body for ``POST <prefix>/add-checkpoint``."""
    if old_size < 0 or len(proof) > MAX_PROOF_LINES:
        raise CheckpointError("old size must be >= 0 and the proof at most 63 hashes")
    lines = [f"old {old_size}\n"]
    lines.extend(base64.b64encode(h).decode("ascii") + "\n" for h in proof)
    return ("".join(lines) + "\n" + note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an ``add-checkpoint`` body; raise :class:`CheckpointError` on any deviation.

    Only the framing is checked here; the note's signatures are checked by the witness.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("request body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise CheckpointError("request body needs an empty line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise CheckpointError("request body must start with an old size line")
    old_size = _decimal(first[4:], "old size")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise CheckpointError("more than 63 consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            raw = base64.b64decode(line.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise CheckpointError("consistency proof line is not base64") from None
        if len(raw) != HASH_SIZE:
            raise CheckpointError("consistency proof line is not a 32-byte hash")
        proof.append(raw)
    split_note(note)  # the framing of a signed note, signatures unchecked
    return AddCheckpoint(old_size, tuple(proof), note)


def format_size(size: int) -> str:
    """The body of a 409 answer: the witness's latest cosigned size."""
    return f"{size}\n"


def parse_size(body: bytes) -> int:
    """Read a ``text/x.tlog.size`` body."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise CheckpointError("size body is not ASCII") from None
    if not text.endswith("\n"):
        raise CheckpointError("size body must end with a newline")
    return _decimal(text[:-1], "size")


def parse_cosignature_lines(body: bytes) -> list[NoteSignature]:
    """The note signature lines of a 200 answer (syntax only; verify them with the keys)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("cosignature response is not UTF-8") from None
    if not text:
        raise CheckpointError("cosignature response is empty")
    # Reuse the note parser: any valid one-line text in front of the lines makes a note.
    _, signatures = split_note("x\n\n" + text)
    return signatures
