"""The file key provider across a KEK rotation: retired KEKs keep unwrapping, a provider loaded
before the rotation notices it, and a rotation interrupted half way loses no key."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from audit_ledger.crypto.envelope import DataKey
from audit_ledger.crypto.keys import (
    EXTERNAL_KEY,
    KEK_FILE,
    RETIRED_KEKS_DIR,
    FileKeyProvider,
    init_keys,
    kek_id_of,
    new_key_id,
    remove_retired_kek,
    retired_kek_ids,
    rotate_kek,
)
from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import ConfigError, CryptoError

ORIGIN = "test.local/ledger"


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys", ORIGIN)
    return tmp_path / "keys"


def _key() -> DataKey:
    return DataKey.generate(new_key_id())


def test_rotation_keeps_the_old_kek_as_retired(keys_dir: Path) -> None:
    before = FileKeyProvider.from_dir(keys_dir)
    key = _key()
    old = before.wrap(key)
    old_id, new_id = rotate_kek(keys_dir)
    assert old.kek_id == old_id
    assert new_id != old_id
    retired = keys_dir / RETIRED_KEKS_DIR / f"{old_id}.key"
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    assert stat.S_IMODE((keys_dir / KEK_FILE).stat().st_mode) == 0o600
    assert retired_kek_ids(keys_dir) == [old_id]

    after = FileKeyProvider.from_dir(keys_dir)
    assert after.kek_id == new_id
    assert after.known_kek_ids == {old_id, new_id}
    assert after.unwrap(key.key_id, old.blob, old_id).secret == key.secret
    assert after.wrap(key).kek_id == new_id


def test_a_provider_loaded_before_the_rotation_notices_it(keys_dir: Path) -> None:
    running = FileKeyProvider.from_dir(keys_dir)
    old_id = running.kek_id
    _, new_id = rotate_kek(keys_dir)
    # Another process re-wraps with the new KEK; this one must still read it...
    key = _key()
    rewrapped = FileKeyProvider.from_dir(keys_dir).wrap(key)
    assert running.unwrap(key.key_id, rewrapped.blob, new_id).secret == key.secret
    # ...and wraps its next key with the new KEK, not the retired one.
    assert running.wrap(_key()).kek_id == new_id
    assert running.kek_id == new_id
    assert old_id in running.known_kek_ids


def test_rewrap_of_a_key_store_key_survives_an_interrupted_rotation(keys_dir: Path) -> None:
    provider = FileKeyProvider.from_dir(keys_dir)
    key = _key()
    stored = provider.store_external(key)
    assert stored.blob == EXTERNAL_KEY
    old_id = stored.kek_id
    _, new_id = rotate_kek(keys_dir)
    moved = provider.rewrap(key.key_id, EXTERNAL_KEY, old_id)
    assert (moved.kek_id, moved.blob) == (new_id, EXTERNAL_KEY)
    # The file is re-wrapped; a row still naming the old KEK (the rotation stopped before
    # its update) and one naming the new KEK both unwrap it.
    assert provider.unwrap(key.key_id, EXTERNAL_KEY, old_id).secret == key.secret
    assert provider.unwrap(key.key_id, EXTERNAL_KEY, new_id).secret == key.secret
    path = keys_dir / "subject-keys" / f"{key.key_id}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob("*.new"))


def test_a_wrapped_key_is_only_read_with_the_kek_it_names(keys_dir: Path) -> None:
    provider = FileKeyProvider.from_dir(keys_dir)
    key = _key()
    old = provider.wrap(key)
    _, new_id = rotate_kek(keys_dir)
    # A database row's wrapping is never tried against other KEKs: that would hide a row whose
    # KEK id was changed without re-wrapping.
    with pytest.raises(CryptoError, match="failed authentication"):
        provider.unwrap(key.key_id, old.blob, new_id)
    with pytest.raises(CryptoError, match="unknown key-encryption key kek-0000000000000000"):
        provider.unwrap(key.key_id, old.blob, "kek-0000000000000000")


def test_two_rotations_and_removal_of_a_retired_kek(keys_dir: Path) -> None:
    first, _ = rotate_kek(keys_dir)
    second, current = rotate_kek(keys_dir)
    assert retired_kek_ids(keys_dir) == sorted([first, second])
    remove_retired_kek(keys_dir, first)
    assert retired_kek_ids(keys_dir) == [second]
    assert FileKeyProvider.from_dir(keys_dir).known_kek_ids == {second, current}
    with pytest.raises(ConfigError, match="malformed"):
        remove_retired_kek(keys_dir, "../kek")


def test_a_retired_file_holding_another_key_is_refused(keys_dir: Path) -> None:
    kek_text = (keys_dir / KEK_FILE).read_text()
    old_id = kek_id_of(Secret(base64.b64decode(kek_text)))
    (keys_dir / RETIRED_KEKS_DIR).mkdir()
    (keys_dir / RETIRED_KEKS_DIR / f"{old_id}.key").write_text("A" * 43 + "=\n")
    with pytest.raises(ConfigError, match="holds another key"):
        rotate_kek(keys_dir)
    assert (keys_dir / KEK_FILE).read_text() == kek_text  # nothing replaced


def test_a_rotation_rerun_after_a_crash_reuses_the_retired_copy(keys_dir: Path) -> None:
    """The retired copy is written before kek.key is replaced: a crash in between leaves both
    holding the old KEK, and the next rotation goes ahead."""
    kek_text = (keys_dir / KEK_FILE).read_text()
    old_id = kek_id_of(Secret(base64.b64decode(kek_text)))
    (keys_dir / RETIRED_KEKS_DIR).mkdir()
    (keys_dir / RETIRED_KEKS_DIR / f"{old_id}.key").write_text(kek_text)
    assert rotate_kek(keys_dir)[0] == old_id
    assert (keys_dir / KEK_FILE).read_text() != kek_text
