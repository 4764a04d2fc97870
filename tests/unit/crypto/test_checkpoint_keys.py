"""Checkpoint key files across a rotation (audit_ledger.crypto.checkpoint_keys): which keys sign
in each phase, the history file, re-reading after another process rotated, and the crash and
misuse cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_ledger.core.checkpoint import Checkpoint, split_note, verify_checkpoint
from audit_ledger.crypto.checkpoint_keys import (
    HISTORY_FILE,
    PREVIOUS_FILE,
    CheckpointKeys,
    finish_rotation,
    start_rotation,
)
from audit_ledger.crypto.keys import CHECKPOINT_FILE, init_keys, load_keys
from audit_ledger.errors import ConfigError, PolicyError

ORIGIN = "example.com/ledger"
CP = Checkpoint(ORIGIN, 3, bytes(range(32)))


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys", ORIGIN)
    return tmp_path / "keys"


def _keys(keys_dir: Path) -> CheckpointKeys:
    return CheckpointKeys(keys_dir, load_keys(keys_dir, ORIGIN).signer)


def test_phases(keys_dir: Path) -> None:
    keys = _keys(keys_dir)
    old = keys.verifier
    assert keys.history() == [old]
    assert len(split_note(keys.sign_checkpoint(CP))[1]) == 1

    assert start_rotation(keys_dir)[0] == old
    new = keys.verifier  # re-read: this process did not rotate through ``keys``
    assert new != old
    assert new.name == old.name == ORIGIN
    assert new.key_hash != old.key_hash
    assert keys.verifiers() == [new, old]
    note = keys.sign_checkpoint(CP)
    assert len(split_note(note)[1]) == 2
    assert verify_checkpoint(note, old) == verify_checkpoint(note, new) == CP
    assert keys.history() == [old, new]
    assert (keys_dir / HISTORY_FILE).read_text() == f"{old.encode()}\n{new.encode()}\n"
    assert (keys_dir / PREVIOUS_FILE).stat().st_mode & 0o777 == 0o600

    assert finish_rotation(keys_dir) == (old, new)
    note = keys.sign_checkpoint(CP)
    assert [s.key_hash for s in split_note(note)[1]] == [new.key_hash]
    assert keys.history() == [old, new]
    assert keys.history_policy().verify_checkpoint(note).log_key == new

    # A second rotation extends the history.
    _, newer = start_rotation(keys_dir)
    finish_rotation(keys_dir)
    assert _keys(keys_dir).history() == [old, new, newer]


def test_refusals_and_a_crash_leftover(keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint-key rotation"):
        finish_rotation(keys_dir)
    start_rotation(keys_dir)
    with pytest.raises(ConfigError, match="transition window"):
        start_rotation(keys_dir)
    finish_rotation(keys_dir)
    # A crash after the previous key was written but before checkpoint.key was replaced: the
    # previous key is the current one; the next rotation clears it and goes on.
    (keys_dir / PREVIOUS_FILE).write_text((keys_dir / CHECKPOINT_FILE).read_text())
    (keys_dir / PREVIOUS_FILE).chmod(0o600)  # as the rotation writes it
    keys = _keys(keys_dir)
    assert len(keys.verifiers()) == 1
    old, new = start_rotation(keys_dir)
    assert keys.verifiers() == [new, old]


def test_a_fixed_signer_is_not_replaced_by_the_directory(keys_dir: Path, tmp_path: Path) -> None:
    init_keys(tmp_path / "other", ORIGIN)
    other = load_keys(tmp_path / "other", ORIGIN).signer
    keys = CheckpointKeys(keys_dir, other)
    assert keys.verifier == other.verifier
    start_rotation(keys_dir)
    assert keys.verifiers() == [other.verifier]


def test_a_bad_history_file_is_a_config_error(keys_dir: Path) -> None:
    (keys_dir / HISTORY_FILE).write_text("not a key\n")
    with pytest.raises(ConfigError, match="bad verifier key"):
        _keys(keys_dir).history()


def test_history_policy_rejects_a_stranger(keys_dir: Path, tmp_path: Path) -> None:
    init_keys(tmp_path / "stranger", ORIGIN)
    stranger = load_keys(tmp_path / "stranger", ORIGIN).signer
    with pytest.raises(PolicyError):
        _keys(keys_dir).history_policy().verify_checkpoint(stranger.sign_checkpoint(CP))
