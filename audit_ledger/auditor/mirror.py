"""The auditor's local mirror: every leaf it has verified, and the signed checkpoint they match.

A mirror is a directory holding everything needed to check the log again offline — and no
plaintext, since leaves carry only headers, blind indexes and ciphertext digests:

* ``leaves.jsonl`` — one line per entry in seq order, ``{"leaf":"<base64>","seq":n}`` (the shape
  of ``GET /v1/log/leaves``), so any JSON tool can read it;
* ``state.json`` — the last verified checkpoint (the signed note as served), the verifier key it
  was checked with, how many bytes of ``leaves.jsonl`` it covers, and the tree's right edge, last
  leaf hash and last ``recorded_at`` at that size, so the next run resumes without re-reading;
* ``evidence/`` — when a check fails, the signed notes, leaves or proofs that contradict each
  other. Two checkpoints signed by the same key that cannot both be true are proof of
  misbehaviour anyone can check, which is why they are kept verbatim.

Writes are crash-safe: new leaves are appended and flushed to disk first, then ``state.json`` is
replaced atomically (write, fsync, rename). Bytes past the length that the state covers belong
to a run that did not finish, and are cut off when the mirror is next opened. One run at a time:
the directory is locked for the whole run.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from audit_ledger.core.merkle import CompactRange
from audit_ledger.durable import write_atomically
from audit_ledger.errors import AuditLedgerError, CoreError

STATE_FORMAT = 1
LEAVES_FILE = "leaves.jsonl"
STATE_FILE = "state.json"
EVIDENCE_DIR = "evidence"
LOCK_FILE = ".lock"


class MirrorError(AuditLedgerError):
    """The mirror directory cannot be used: locked by another run, unreadable or malformed."""


@dataclass(frozen=True, slots=True)
class MirrorState:
    """What the mirror has verified: the first ``checkpoint``'s tree size leaves of the log."""

    verifier_key: str
    #: the signed checkpoint note, verbatim as the server sent it
    checkpoint: str
    size: int
    #: length of ``leaves.jsonl`` holding exactly ``size`` leaves
    leaves_bytes: int
    tree: CompactRange
    last_leaf: bytes | None
    last_recorded_at: str | None

    def to_json(self) -> bytes:
        doc = {
            "format": STATE_FORMAT,
            "verifier_key": self.verifier_key,
            "checkpoint": self.checkpoint,
            "size": self.size,
            "leaves_bytes": self.leaves_bytes,
            "right_edge": [h.hex() for h in self.tree.hashes],
            "last_leaf_hash": self.last_leaf.hex() if self.last_leaf is not None else None,
            "last_recorded_at": self.last_recorded_at,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> MirrorState:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
                raise MirrorError(f"{STATE_FILE} is not a mirror state of format {STATE_FORMAT}")
            size, leaves_bytes = doc["size"], doc["leaves_bytes"]
            last = doc["last_leaf_hash"]
            recorded = doc["last_recorded_at"]
            if (
                type(size) is not int
                or type(leaves_bytes) is not int
                or leaves_bytes < 0
                or not isinstance(doc["verifier_key"], str)
                or not isinstance(doc["checkpoint"], str)
                or not (last is None or isinstance(last, str))
                or not (recorded is None or isinstance(recorded, str))
            ):
                raise MirrorError(f"{STATE_FILE} has members of the wrong type")
            tree = CompactRange(size, [bytes.fromhex(h) for h in doc["right_edge"]])
            return cls(
                verifier_key=doc["verifier_key"],
                checkpoint=doc["checkpoint"],
                size=size,
                leaves_bytes=leaves_bytes,
                tree=tree,
                last_leaf=bytes.fromhex(last) if last is not None else None,
                last_recorded_at=recorded,
            )
        except (ValueError, KeyError, TypeError, CoreError):
            raise MirrorError(f"{STATE_FILE} is malformed") from None


def leaf_line(seq: int, leaf: bytes) -> bytes:
    """One line of ``leaves.jsonl``."""
    return b'{"leaf":"%s","seq":%d}\n' % (base64.b64encode(leaf), seq)


def parse_leaf_line(line: bytes, number: int) -> tuple[int, bytes]:
    """``(seq, leaf)`` of one line of ``leaves.jsonl`` (``number`` is 1-based, for errors)."""
    try:
        doc = json.loads(line)
        seq, text = doc["seq"], doc["leaf"]
        if type(seq) is int and isinstance(text, str):
            return seq, base64.b64decode(text, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise MirrorError(f"{LEAVES_FILE} line {number} is not a leaf record")


class Mirror:
    """An opened, locked mirror directory (see :func:`open_mirror`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.leaves_path = directory / LEAVES_FILE
        self.state_path = directory / STATE_FILE

    def load(self) -> MirrorState | None:
        """The committed state (None for a new mirror); cuts off an unfinished run's leaves."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            state = None
        except OSError as exc:
            raise MirrorError(f"cannot read {self.state_path}: {exc.strerror}") from None
        else:
            state = MirrorState.from_json(raw)
        committed = state.leaves_bytes if state is not None else 0
        try:
            length = self.leaves_path.stat().st_size
        except FileNotFoundError:
            length = 0
        if length < committed:
            raise MirrorError(
                f"{LEAVES_FILE} is shorter than {STATE_FILE} says: the mirror was truncated"
            )
        if length > committed:
            with self.leaves_path.open("r+b") as leaves:
                leaves.truncate(committed)
        return state

    @contextmanager
    def appending(self) -> Iterator[IO[bytes]]:
        """The leaves file opened for appending; flushed to disk when the block ends."""
        with self.leaves_path.open("ab") as leaves:
            yield leaves
            leaves.flush()
            os.fsync(leaves.fileno())

    def commit(self, state: MirrorState) -> None:
        """Replace the state atomically (the leaves it covers must be on disk already)."""
        write_atomically(self.state_path, state.to_json(), mode=0o644)

    def read_leaves(self, limit_bytes: int) -> Iterator[tuple[int, bytes]]:
        """Every ``(seq, leaf)`` in the first ``limit_bytes`` of the leaves file."""
        remaining = limit_bytes
        try:
            leaves = self.leaves_path.open("rb")
        except FileNotFoundError:
            if limit_bytes:
                raise MirrorError(f"{LEAVES_FILE} is missing") from None
            return
        with leaves:
            for number, line in enumerate(leaves, start=1):
                if remaining <= 0:
                    return
                remaining -= len(line)
                if remaining < 0 or not line.endswith(b"\n"):
                    raise MirrorError(f"{LEAVES_FILE} line {number} is cut short")
                yield parse_leaf_line(line, number)
        if remaining > 0:
            raise MirrorError(f"{LEAVES_FILE} is shorter than {STATE_FILE} says")

    def save_evidence(self, what: str, documents: Mapping[str, str | bytes]) -> Path:
        """Keep contradicting documents verbatim in ``evidence/<time>-<what>/``."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        folder = self.directory / EVIDENCE_DIR / f"{stamp}-{what}"
        folder.mkdir(parents=True)
        for name, content in documents.items():
            data = content.encode() if isinstance(content, str) else content
            write_atomically(folder / name, data, mode=0o644)
        return folder


@contextmanager
def open_mirror(directory: Path, *, create: bool) -> Iterator[Mirror]:
    """Lock ``directory`` for one run (creating it if ``create``); :class:`MirrorError` if it is
    missing, not a directory, or in use by another run."""
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        lock: Any = (directory / LOCK_FILE).open("a")
    except FileNotFoundError:
        raise MirrorError(f"no mirror at {directory}") from None
    except OSError as exc:
        raise MirrorError(f"cannot use {directory} as a mirror: {exc.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MirrorError(f"{directory} is in use by another audit run") from None
        yield Mirror(directory)
