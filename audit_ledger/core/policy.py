"""Transparency log trust policies (C2SP tlog-policy) and their evaluation on checkpoints.

A policy file lists the logs it trusts (``log <vkey> [<url>]``), named witnesses
(``witness <name> <vkey> [<url>]``), witness groups (``group <name> all|any|<k> <member>...``) and
exactly one ``quorum <name>`` line (``none``: no cosignature needed). A checkpoint satisfies the
policy when one of the listed log keys signed it (tlog-checkpoint; several ``log`` lines with the
same name and different keys are a signing-key history, e.g. across a rotation) and the quorum
of witnesses cosigned it (tlog-cosignature v1).

The parser follows tlog-policy "Policy file syntax and structure": whitespace is ASCII space and
tab only; empty and ``#`` comment lines are ignored; a group or the quorum refers only to names
defined on preceding lines (so no cycles); each name is a member of a group at most once;
``1 <= k <= n``; duplicate log or witness keys (same public key) are refused; the only control
octets allowed are tab and newline. Octets with the high bit set are opaque: the text is
decoded with ``surrogateescape`` so names compare as octet strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from audit_ledger.core.checkpoint import (
    Checkpoint,
    Verifier,
    parse_checkpoint_body,
    parse_verifier_key,
    split_note,
)
from audit_ledger.core.cosignature import CosignerKey, parse_cosigner_key, verified_cosignatures
from audit_ledger.errors import CheckpointError, PolicyError, PolicySyntaxError, QuorumError

NONE = "none"
#: tlog-policy "Implementation limits": at least 32 of each must be supported; we allow more.
MAX_ENTRIES = 256
_WS = re.compile(r"[ \t]+")
_K = re.compile(r"[1-9][0-9]{0,3}\Z")
_BAD_OCTETS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Group:
    """A witness group: witnessed when at least ``k`` of its ``members`` are."""

    name: str
    k: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint that satisfied a policy: the body, the log key that signed it (the first
    one of the policy's log keys that did) and the witnesses whose cosignatures verified."""

    checkpoint: Checkpoint
    log_key: Verifier
    cosigners: frozenset[str]


@dataclass(frozen=True, slots=True)
class TlogPolicy:
    """A parsed tlog-policy: log keys, witnesses, groups and the quorum."""

    logs: tuple[Verifier, ...]
    witnesses: dict[str, CosignerKey] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    quorum: str = NONE

    def verify_log_signature(self, note: str) -> tuple[Checkpoint, Verifier]:
        """The checkpoint of ``note`` and the first policy log key that signed it.

        As ``sumdb/note.Open``: signature lines by keys the policy does not list are ignored;
        a line claiming a listed key's name and key hash that does not verify is an error.
        The log key's name must be the checkpoint's origin (tlog-policy "Defining a log").
        """
        if not self.logs:
            raise PolicyError("the policy lists no log key")
        text, signatures = split_note(note)
        checkpoint = parse_checkpoint_body(text)
        message = text.encode("utf-8")
        signer: Verifier | None = None
        for key in self.logs:
            for sig in signatures:
                if sig.name != key.name or sig.key_hash != key.key_hash:
                    continue
                if len(sig.blob) != 68 or not key.verify(message, sig.blob[4:]):
                    raise CheckpointError(f"the signature by log key {key.encode()} is invalid")
                if key.name == checkpoint.origin and signer is None:
                    signer = key
        if signer is None:
            raise PolicyError(
                f"the checkpoint of {checkpoint.origin} carries no signature by a log key of the "
                "policy"
            )
        return checkpoint, signer

    def verify_checkpoint(self, note: str) -> VerifiedCheckpoint:
        """Check ``note`` against the whole policy: a log signature and the witness quorum.

        Raises :class:`PolicyError` naming the group that lacks its quorum, or
        :class:`CheckpointError` for a malformed note or a signature that does not verify.
        """
        checkpoint, log_key = self.verify_log_signature(note)
        # Policy names are local to the policy file; a witness is known by its key (name and
        # key ID in the signature line), so each is checked on its own.
        cosigned = frozenset(
            name for name, key in self.witnesses.items() if verified_cosignatures(note, [key])
        )
        if not self._witnessed(self.quorum, cosigned):
            raise QuorumError(self._shortfall(self.quorum, cosigned))
        return VerifiedCheckpoint(checkpoint, log_key, cosigned)

    def _witnessed(self, name: str, cosigned: frozenset[str]) -> bool:
        if name == NONE:
            return True
        if name in self.witnesses:
            return name in cosigned
        group = self.groups[name]
        return sum(self._witnessed(m, cosigned) for m in group.members) >= group.k

    def _shortfall(self, name: str, cosigned: frozenset[str]) -> str:
        """Why ``name`` is not witnessed, down to the innermost group that lacks its quorum."""
        if name in self.witnesses:
            return f"the quorum is not met: witness {name} has not cosigned the checkpoint"
        group = self.groups[name]
        have = sum(self._witnessed(m, cosigned) for m in group.members)
        inner = [m for m in group.members if m in self.groups and not self._witnessed(m, cosigned)]
        # The innermost failing group explains best when the outer one misses only through it.
        if inner and have + 1 >= group.k:
            return self._shortfall(inner[0], cosigned)
        return (
            f"the quorum is not met: group {name} has {have} of the {group.k} "
            f"cosigning members it needs (of {len(group.members)})"
        )


def key_history_policy(keys: list[Verifier]) -> TlogPolicy:
    """A policy of log keys alone (``quorum none``): e.g. repeated ``--verifier-key``."""
    return _checked_logs(tuple(keys), 0)


def _checked_logs(logs: tuple[Verifier, ...], line: int) -> TlogPolicy:
    publics = [key.public_key for key in logs]
    if len(set(publics)) != len(publics):
        raise PolicySyntaxError(_at(line, "the same log key is listed twice"))
    return TlogPolicy(logs)


def _at(line: int, message: str) -> str:
    return f"policy line {line}: {message}" if line else message


def parse_policy(data: bytes) -> TlogPolicy:
    """Parse a tlog-policy file; :class:`PolicySyntaxError` names the first bad line."""
    if _BAD_OCTETS.search(data):
        raise PolicySyntaxError("the policy holds a control character other than tab or newline")
    text = data.decode("utf-8", "surrogateescape")
    logs: list[Verifier] = []
    witnesses: dict[str, CosignerKey] = {}
    groups: dict[str, Group] = {}
    quorum: str | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        words = [w for w in _WS.split(raw) if w]
        if not words or words[0].startswith("#"):
            continue
        keyword, args = words[0], words[1:]
        if len(logs) + len(witnesses) + len(groups) >= MAX_ENTRIES:
            raise PolicySyntaxError(_at(number, f"more than {MAX_ENTRIES} definitions"))
        if keyword == "log":
            if len(args) not in (1, 2):
                raise PolicySyntaxError(_at(number, "expected: log <vkey> [<url>]"))
            logs.append(_vkey(args[0], number, "log"))
            _checked_logs(tuple(logs), number)
        elif keyword == "witness":
            if len(args) not in (2, 3):
                raise PolicySyntaxError(_at(number, "expected: witness <name> <vkey> [<url>]"))
            name = _new_name(args[0], witnesses, groups, number)
            key = _cosigner(args[1], number)
            if any(w.public_key == key.public_key for w in witnesses.values()):
                raise PolicySyntaxError(_at(number, "the same witness key is listed twice"))
            witnesses[name] = key
        elif keyword == "group":
            groups[args[0] if args else ""] = _group(args, witnesses, groups, number)
        elif keyword == "quorum":
            if quorum is not None:
                raise PolicySyntaxError(_at(number, "a policy has exactly one quorum line"))
            if len(args) != 1:
                raise PolicySyntaxError(_at(number, "expected: quorum <name>"))
            if args[0] != NONE and args[0] not in witnesses and args[0] not in groups:
                raise PolicySyntaxError(_at(number, "the quorum names an undefined witness/group"))
            quorum = args[0]
        else:
            raise PolicySyntaxError(_at(number, "unknown keyword (log, witness, group, quorum)"))
    if quorum is None:
        raise PolicySyntaxError("the policy has no quorum line")
    return TlogPolicy(tuple(logs), witnesses, groups, quorum)


def _vkey(text: str, line: int, what: str) -> Verifier:
    try:
        return parse_verifier_key(text)
    except CheckpointError as exc:
        raise PolicySyntaxError(_at(line, f"bad {what} key: {exc}")) from None


def _cosigner(text: str, line: int) -> CosignerKey:
    try:
        return parse_cosigner_key(text)
    except CheckpointError as exc:
        raise PolicySyntaxError(_at(line, f"bad witness key: {exc}")) from None


def _new_name(
    name: str, witnesses: dict[str, CosignerKey], groups: dict[str, Group], line: int
) -> str:
    if name == NONE:
        raise PolicySyntaxError(_at(line, "'none' is predefined and cannot be redefined"))
    if name in witnesses or name in groups:
        raise PolicySyntaxError(_at(line, "the name is already defined"))
    return name


def _group(
    args: list[str], witnesses: dict[str, CosignerKey], groups: dict[str, Group], line: int
) -> Group:
    if len(args) < 3:
        raise PolicySyntaxError(_at(line, "expected: group <name> all|any|<k> <name>..."))
    name = _new_name(args[0], witnesses, groups, line)
    threshold, members = args[1], tuple(args[2:])
    for member in members:
        if member not in witnesses and member not in groups:
            raise PolicySyntaxError(_at(line, "a group member is not defined on an earlier line"))
    if len(set(members)) != len(members):
        raise PolicySyntaxError(_at(line, "a group lists the same member twice"))
    if threshold == "all":
        k = len(members)
    elif threshold == "any":
        k = 1
    elif _K.match(threshold) and int(threshold) <= len(members):
        k = int(threshold)
    else:
        raise PolicySyntaxError(_at(line, "the threshold must be all, any or 1 <= k <= n"))
    return Group(name, k, members)
