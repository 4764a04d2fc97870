"""Checkpoint signing keys across a rotation (issue #13 item 7; DESIGN §7).

A checkpoint note may carry several log signatures (signed-note; DESIGN §7), and the key name is
the origin, so an old and a new key share the name and differ in key hash. A rotation has two
steps, each an operation recorded in the chain (``ledger/checkpoint_rotation.py``):

1. **start** (``audit-ledger keys rotate-checkpoint``): a new key becomes ``checkpoint.key``;
   the old one moves to ``checkpoint.previous.key`` and keeps signing. During this transition
   window every checkpoint carries both signatures, so a verifier that knows either key accepts
   it and auditors can move to the new key at their own pace.
2. **finish** (``audit-ledger keys rotate-checkpoint --finish``): ``checkpoint.previous.key``
   is deleted; from then on checkpoints carry the new signature alone.

``checkpoint-keys.history`` lists the public verifier key of every checkpoint key the ledger
has signed with, oldest first (absent before the first rotation: the history is the current
key). ``verify`` checks every stored checkpoint against that history — an old checkpoint keeps
its old signature forever — and a checkpoint signed by none of them fails.

The files are re-read when they change (a rotation made by the CLI while a server runs), as
the KEK is: a server starts co-signing, and stops, without a restart.

Crash safety: the history is written (atomically) before the new key is used; the old key is
written to ``checkpoint.previous.key`` durably before ``checkpoint.key`` is replaced
(atomically), so it never exists nowhere. A crash between those two leaves a previous key equal
to the current one, which the next ``rotate-checkpoint`` clears up.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from audit_ledger.core.checkpoint import (
    Checkpoint,
    Verifier,
    join_note,
    parse_verifier_key,
    split_note,
)
from audit_ledger.core.policy import TlogPolicy, key_history_policy
from audit_ledger.crypto.keys import (
    CHECKPOINT_FILE,
    CheckpointSigner,
    _replace_private,
    _write_private,
    parse_signer_key,
)
from audit_ledger.crypto.secret import Secret
from audit_ledger.durable import fsync_dir, write_atomically
from audit_ledger.errors import CheckpointError, ConfigError

PREVIOUS_FILE = "checkpoint.previous.key"
HISTORY_FILE = "checkpoint-keys.history"

_Stamp = tuple[tuple[int, int, int] | None, ...]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_signer(path: Path) -> CheckpointSigner:
    try:
        return parse_signer_key(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.__class__.__name__}") from None


def read_history(keys_dir: Path, current: Verifier) -> list[Verifier]:
    """Every checkpoint verifier key used so far, oldest first (the current one included)."""
    path = keys_dir / HISTORY_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return [current]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc.__class__.__name__}") from None
    try:
        history = [parse_verifier_key(line) for line in lines if line.strip()]
    except CheckpointError as exc:
        raise ConfigError(f"{path} holds a bad verifier key: {exc}") from None
    if current not in history:
        history.append(current)
    return history


class CheckpointKeys:
    """The signers of a keys directory: the current key and, during a rotation's transition
    window, the previous one; re-read when the files change."""

    def __init__(self, keys_dir: Path | None, current: CheckpointSigner) -> None:
        self._dir = keys_dir  # None: a fixed signer (tests, tools), never re-read
        self._lock = threading.Lock()
        self._stamp: _Stamp | None = None
        self._signers: tuple[CheckpointSigner, ...] = (current,)
        if keys_dir is not None and (keys_dir / CHECKPOINT_FILE).exists():
            # Follow the directory only if it holds the key this process was given.
            if _read_signer(keys_dir / CHECKPOINT_FILE).verifier == current.verifier:
                self._refresh()
            else:
                self._dir = None
        else:
            self._dir = None

    def __repr__(self) -> str:
        return f"CheckpointKeys(name={self.name!r}, signers={len(self._signers)})"

    @staticmethod
    def _stamps(directory: Path) -> _Stamp:
        return (_stat(directory / CHECKPOINT_FILE), _stat(directory / PREVIOUS_FILE))

    def _refresh(self) -> tuple[CheckpointSigner, ...]:
        if self._dir is None:
            return self._signers
        with self._lock:
            stamp = self._stamps(self._dir)
            if stamp != self._stamp:
                current = _read_signer(self._dir / CHECKPOINT_FILE)
                signers = [current]
                previous_path = self._dir / PREVIOUS_FILE
                try:
                    previous = _read_signer(previous_path) if stamp[1] is not None else None
                except ConfigError:
                    if previous_path.exists():
                        raise
                    previous = None  # deleted by a --finish between the stat and the read
                if previous is not None and previous.verifier != current.verifier:
                    signers.append(previous)
                if any(s.name != self._signers[0].name for s in signers):
                    raise ConfigError("a checkpoint key file names another origin")
                self._signers, self._stamp = tuple(signers), stamp
            return self._signers

    @property
    def name(self) -> str:
        return self._signers[0].name

    @property
    def verifier(self) -> Verifier:
        """The current key (``GET /v1/log/verifier-key``)."""
        return self._refresh()[0].verifier

    def verifiers(self) -> list[Verifier]:
        """The keys that sign now: the current one, then the previous during a rotation."""
        return [s.verifier for s in self._refresh()]

    def sign_checkpoint(self, checkpoint: Checkpoint) -> str:
        """The note signed by every current signer (two during a rotation's window)."""
        signers = self._refresh()
        text, signatures = split_note(signers[0].sign_checkpoint(checkpoint))
        for other in signers[1:]:
            signatures += split_note(other.sign_checkpoint(checkpoint))[1]
        return join_note(text, signatures)

    def history(self) -> list[Verifier]:
        """Every key the ledger has signed checkpoints with, oldest first."""
        signers = self._refresh()
        if self._dir is None:
            return [s.verifier for s in signers]
        history = read_history(self._dir, signers[0].verifier)
        return history + [s.verifier for s in signers if s.verifier not in history]

    def history_policy(self) -> TlogPolicy:
        """The key history as a tlog-policy of log keys (``quorum none``)."""
        return key_history_policy(self.history())


def _write_history(keys_dir: Path, history: list[Verifier]) -> None:
    text = "".join(v.encode() + "\n" for v in history)
    write_atomically(keys_dir / HISTORY_FILE, text.encode("utf-8"))


def start_rotation(keys_dir: Path) -> tuple[Verifier, Verifier]:
    """Make a new current checkpoint key; the old one keeps co-signing as the previous key.
    Returns ``(old, new)`` verifier keys. Refuses while another rotation is unfinished."""
    current = _read_signer(keys_dir / CHECKPOINT_FILE)
    previous_path = keys_dir / PREVIOUS_FILE
    if previous_path.exists():
        previous = _read_signer(previous_path)
        if previous.verifier != current.verifier:
            raise ConfigError(
                "a checkpoint-key rotation is in its transition window; run "
                "'audit-ledger keys rotate-checkpoint --finish' first"
            )
        previous_path.unlink()  # left by a crash before checkpoint.key was replaced
    new = CheckpointSigner(current.name, Secret(os.urandom(32)))
    history = read_history(keys_dir, current.verifier)
    _write_history(keys_dir, [*history, new.verifier])
    _write_private(previous_path, current.encode_private(), durable=True)
    _replace_private(keys_dir / CHECKPOINT_FILE, new.encode_private())
    return current.verifier, new.verifier


def finish_rotation(keys_dir: Path) -> tuple[Verifier, Verifier]:
    """End the transition window: delete the previous key. Returns ``(retired, current)``."""
    previous_path = keys_dir / PREVIOUS_FILE
    if not previous_path.exists():
        raise ConfigError("no checkpoint-key rotation is in progress")
    previous = _read_signer(previous_path)
    current = _read_signer(keys_dir / CHECKPOINT_FILE)
    previous_path.unlink()
    fsync_dir(keys_dir)
    return previous.verifier, current.verifier
