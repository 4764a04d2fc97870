"""Key store permissions (issue #12): keys/ is created 0700 (even when it existed 0755, as a git
checkout leaves it), and a key directory or key file the group or others can read is refused at
start-up with one line naming it and the chmod that fixes it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from audit_ledger.crypto.keys import (
    CHECKPOINT_FILE,
    INDEX_FILE,
    KEK_FILE,
    RETIRED_KEKS_DIR,
    init_keys,
    load_keys,
    rotate_kek,
)
from audit_ledger.errors import ConfigError

ORIGIN = "test.local/ledger"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    init_keys(path, ORIGIN)
    return path


def test_init_creates_a_0700_directory_of_0600_files(keys_dir: Path) -> None:
    assert _mode(keys_dir) == 0o700
    for name in (KEK_FILE, INDEX_FILE, CHECKPOINT_FILE):
        assert _mode(keys_dir / name) == 0o600
    load_keys(keys_dir, ORIGIN)  # and such a store loads


def test_init_tightens_an_existing_0755_directory(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.mkdir()
    path.chmod(0o755)
    init_keys(path, ORIGIN)
    assert _mode(path) == 0o700


@pytest.mark.parametrize("name", [KEK_FILE, INDEX_FILE, CHECKPOINT_FILE])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_others_can_read_is_refused(keys_dir: Path, name: str, mode: int) -> None:
    path = keys_dir / name
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_keys(keys_dir, ORIGIN)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message


def test_an_owner_only_read_only_key_file_is_fine(keys_dir: Path) -> None:
    (keys_dir / KEK_FILE).chmod(0o400)
    load_keys(keys_dir, ORIGIN)


def test_a_keys_directory_others_can_enter_is_refused(keys_dir: Path) -> None:
    keys_dir.chmod(0o755)
    with pytest.raises(ConfigError, match=rf"chmod 700 {keys_dir}\Z"):
        load_keys(keys_dir, ORIGIN)


def test_a_retired_kek_others_can_read_is_refused(keys_dir: Path) -> None:
    old_id, _ = rotate_kek(keys_dir)
    load_keys(keys_dir, ORIGIN)
    retired = keys_dir / RETIRED_KEKS_DIR / f"{old_id}.key"
    retired.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"chmod 600 {retired}\Z"):
        load_keys(keys_dir, ORIGIN)
    retired.chmod(0o600)
    retired.parent.chmod(0o750)
    with pytest.raises(ConfigError, match=rf"chmod 700 {retired.parent}\Z"):
        load_keys(keys_dir, ORIGIN)


def test_the_subject_key_store_is_checked_as_a_directory(keys_dir: Path) -> None:
    """Per-subject key files are not checked one by one at every start (there is one per data
    subject); the directory's 0700 is what keeps others out of all of them, and that is checked."""
    store = keys_dir / "subject-keys"
    store.mkdir(mode=0o700)
    (store / "k-1.key").write_text("x")
    (store / "k-1.key").chmod(0o644)  # unreachable for others through a 0700 directory
    load_keys(keys_dir, ORIGIN)
    store.chmod(0o755)
    with pytest.raises(ConfigError, match=rf"chmod 700 {store}\Z"):
        load_keys(keys_dir, ORIGIN)
