"""Key material outside the database: the key-encryption key (KEK), the blind-index key and the
checkpoint signing key, kept as files in ``keys/`` (mode 0600).

Data keys (DEKs) live in the database only wrapped by the KEK, through the small
:class:`KeyProvider` protocol, so a KMS-backed provider can replace :class:`FileKeyProvider`
without touching callers. Wrapping is AES-256-GCM with the DEK's id as associated data, so a
wrapped key cannot be swapped onto another key id.

Files (all created by :func:`init_keys`):

* ``kek.key`` — base64 of 32 random bytes;
* ``index.key`` — base64 of 32 random bytes (HMAC key for blind indexes);
* ``checkpoint.key`` — ``PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>``, the signer key
  format of ``golang.org/x/mod/sumdb/note``, so the same file works with Go tooling.

Later: ``subject-keys/`` (erasable data keys, wrapped by the KEK) and ``retired-keks/`` (KEKs
replaced by :func:`rotate_kek`, kept until no data key is wrapped by them any more).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit_ledger.core.checkpoint import (
    ALG_ED25519,
    Checkpoint,
    Verifier,
    check_key_name,
    make_verifier,
    sign_note,
)
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.crypto.envelope import KEY_SIZE, NONCE_SIZE, DataKey
from audit_ledger.crypto.file_modes import check_key_store_modes, private_dir
from audit_ledger.crypto.secret import Secret
from audit_ledger.durable import fsync_dir
from audit_ledger.errors import CheckpointError, ConfigError, CryptoError, ExternalKeyMissingError

KEK_FILE = "kek.key"
INDEX_FILE = "index.key"
CHECKPOINT_FILE = "checkpoint.key"
EXTERNAL_KEYS_DIR = "subject-keys"
RETIRED_KEKS_DIR = "retired-keks"
_KEY_ID = re.compile(r"dk_[0-9a-f]{24}\Z")
_KEK_ID = re.compile(r"kek-[0-9a-f]{16}\Z")
_WRAP_CONTEXT = b"audit-ledger/dek-wrap/v1\x00"

#: Stored in ``data_keys.wrapped`` for a key whose material lives in the key store, not the
#: database (subject keys): erasing it then reaches database backups too.
EXTERNAL_KEY = b"external-key-store:v1"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """What a data key's row holds: the wrapped material and the KEK that wrapped it."""

    kek_id: str
    blob: bytes


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a key-encryption key held outside the database, and
    keeps erasable (subject) keys outside the database altogether."""

    @property
    def kek_id(self) -> str:
        """Identifies the KEK that :meth:`wrap` uses now (stored beside each wrapped key)."""
        ...

    def wrap(self, key: DataKey) -> WrappedKey: ...

    def unwrap(self, key_id: str, wrapped: bytes, kek_id: str) -> DataKey: ...

    def store_external(self, key: DataKey) -> WrappedKey:
        """Keep ``key`` in the key store; return what the database row holds instead."""
        ...

    def rewrap(self, key_id: str, wrapped: bytes, kek_id: str) -> WrappedKey:
        """The same data key wrapped by the current KEK (a key kept in the key store is
        rewritten there); for a KEK rotation."""
        ...

    def destroy_external(self, key_id: str) -> bool:
        """Destroy a key kept in the key store (True if it existed)."""
        ...

    def external_key_ids(self) -> list[str]:
        """Ids of the keys kept in the key store."""
        ...

    def rotate_kek(self) -> str:
        """Make a new current KEK, keeping the old one (retired) for unwrapping; the old id."""
        ...

    def retired_kek_ids(self) -> list[str]:
        """Ids of the retired KEKs still kept."""
        ...

    def remove_retired_kek(self, kek_id: str) -> None:
        """Delete a retired KEK (the caller has checked no data key still needs it)."""
        ...


def kek_id_of(kek: Secret) -> str:
    """The public fingerprint of a KEK (stored beside every key it wraps)."""
    return "kek-" + hashlib.sha256(b"audit-ledger/kek-id\x00" + kek.reveal()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Keks:
    """The KEKs a provider knows: the current one wraps, every one unwraps."""

    current: str
    aeads: dict[str, AESGCM]
    #: identity of ``kek.key`` when read (inode, mtime, size): a rotation replaces the file
    stamp: tuple[int, int, int] | None = None


class FileKeyProvider:
    """KEK read from ``keys/kek.key``; erasable keys kept as files in ``keys/subject-keys/``.

    A subject key's material never enters the database (its row holds :data:`EXTERNAL_KEY`), so
    deleting its file makes that subject's payloads unreadable in every database backup too.
    The directory must be shared by all replicas (as the rest of ``keys/`` is) and backed up,
    if at all, with a retention no longer than erasure allows.

    KEKs retired by :func:`rotate_kek` stay in ``keys/retired-keks/`` and keep unwrapping the
    keys they wrapped until those are re-wrapped by the current KEK
    (:meth:`audit_ledger.ledger.keys.Keys.rewrap`).
    A provider loaded from a directory notices a rotation made by another process: before
    wrapping a new key (so it never wraps with a retired KEK for long), and when a row names a
    KEK it does not know.
    """

    def __init__(
        self,
        kek: Secret,
        external_dir: Path | None = None,
        retired: Iterable[Secret] = (),
        *,
        keys_dir: Path | None = None,
        stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self._external_dir = external_dir
        self._keys_dir = keys_dir  # re-read on a rotation (None: never)
        self._lock = threading.Lock()
        self._keks = _keks(kek, retired, stamp)

    @classmethod
    def from_dir(cls, keys_dir: Path) -> FileKeyProvider:
        """The provider of a keys directory (current and retired KEKs, subject keys)."""
        stamp = _stamp(keys_dir)  # before reading: a rotation in between is seen later
        kek, retired = _read_keks(keys_dir)
        return cls(kek, keys_dir / EXTERNAL_KEYS_DIR, retired, keys_dir=keys_dir, stamp=stamp)

    def __repr__(self) -> str:
        return f"FileKeyProvider(kek_id={self._keks.current!r})"

    @property
    def kek_id(self) -> str:
        return self._reload(if_changed=True).current

    @property
    def known_kek_ids(self) -> frozenset[str]:
        return frozenset(self._keks.aeads)

    def _reload(self, *, if_changed: bool) -> _Keks:
        """Re-read the KEK files (after another process rotated them)."""
        if self._keys_dir is None:
            return self._keks
        with self._lock:
            stamp = _stamp(self._keys_dir)
            if not if_changed or stamp != self._keks.stamp:
                kek, retired = _read_keks(self._keys_dir)
                self._keks = _keks(kek, retired, stamp)
            return self._keks

    def wrap(self, key: DataKey) -> WrappedKey:
        keks = self._reload(if_changed=True)  # one stat: a new key never gets a retired KEK
        nonce = os.urandom(NONCE_SIZE)
        aad = _WRAP_CONTEXT + key.key_id.encode("utf-8")
        blob = nonce + keks.aeads[keks.current].encrypt(nonce, key.secret.reveal(), aad)
        return WrappedKey(keks.current, blob)

    def _external_path(self, key_id: str) -> Path:
        if self._external_dir is None:
            raise CryptoError("this key provider has no external key store")
        if not _KEY_ID.match(key_id):
            raise CryptoError("malformed data key id")
        return self._external_dir / f"{key_id}.key"

    def store_external(self, key: DataKey) -> WrappedKey:
        path = self._external_path(key.key_id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sealed = self.wrap(key)
        _write_private(path, base64.b64encode(sealed.blob).decode("ascii"), durable=True)
        return WrappedKey(sealed.kek_id, EXTERNAL_KEY)

    def rewrap(self, key_id: str, wrapped: bytes, kek_id: str) -> WrappedKey:
        key = self.unwrap(key_id, wrapped, kek_id)
        if wrapped != EXTERNAL_KEY:
            return self.wrap(key)
        path = self._external_path(key_id)
        sealed = self.wrap(key)
        # Replaced atomically; until the row names the new KEK, unwrap finds it by trying the
        # others (a rotation interrupted between the file and the row loses nothing).
        _replace_private(path, base64.b64encode(sealed.blob).decode("ascii"))
        return WrappedKey(sealed.kek_id, EXTERNAL_KEY)

    def destroy_external(self, key_id: str) -> bool:
        path = self._external_path(key_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def external_key_ids(self) -> list[str]:
        if self._external_dir is None or not self._external_dir.is_dir():
            return []
        return sorted(p.stem for p in self._external_dir.glob("*.key"))

    def unwrap(self, key_id: str, wrapped: bytes, kek_id: str) -> DataKey:
        keks = self._keks
        if kek_id not in keks.aeads:
            keks = self._reload(if_changed=False)
            if kek_id not in keks.aeads:
                raise CryptoError(
                    f"data key {key_id} is wrapped by an unknown key-encryption key {kek_id}"
                )
        external = wrapped == EXTERNAL_KEY
        if external:
            try:
                text = self._external_path(key_id).read_text(encoding="ascii")
                wrapped = base64.b64decode(text.strip(), validate=True)
            except FileNotFoundError:
                raise ExternalKeyMissingError(
                    f"data key {key_id} is not in the key store (erased)"
                ) from None
            except (OSError, UnicodeDecodeError, binascii.Error):
                raise CryptoError(f"data key {key_id} in the key store is unreadable") from None
        aad = _WRAP_CONTEXT + key_id.encode("utf-8")
        if len(wrapped) < NONCE_SIZE + 16:  # nonce + tag at least; AESGCM would raise ValueError
            raise CryptoError(f"wrapped data key {key_id} is truncated")
        named = keks.aeads[kek_id]
        others = [a for i, a in keks.aeads.items() if i != kek_id] if external else []
        for aead in (named, *others):
            try:
                raw = aead.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
            except InvalidTag:
                continue
            return DataKey(key_id, Secret(raw))
        raise CryptoError(f"wrapped data key {key_id} failed authentication")

    def _dir(self) -> Path:
        if self._keys_dir is None:
            raise ConfigError("this key provider was not loaded from a keys directory")
        return self._keys_dir

    def rotate_kek(self) -> str:
        return rotate_kek(self._dir())[0]

    def retired_kek_ids(self) -> list[str]:
        return retired_kek_ids(self._dir())

    def remove_retired_kek(self, kek_id: str) -> None:
        remove_retired_kek(self._dir(), kek_id)


def _keks(kek: Secret, retired: Iterable[Secret], stamp: tuple[int, int, int] | None) -> _Keks:
    if len(kek) != KEY_SIZE or any(len(r) != KEY_SIZE for r in retired):
        raise ConfigError("a key-encryption key must hold 32 bytes")
    aeads = {kek_id_of(r): AESGCM(r.reveal()) for r in retired}
    aeads[kek_id_of(kek)] = AESGCM(kek.reveal())
    return _Keks(kek_id_of(kek), aeads, stamp)


def _stamp(keys_dir: Path | None) -> tuple[int, int, int] | None:
    if keys_dir is None:
        return None
    try:
        st = (keys_dir / KEK_FILE).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_keks(keys_dir: Path) -> tuple[Secret, list[Secret]]:
    retired_dir = keys_dir / RETIRED_KEKS_DIR
    retired = (
        [_read_secret_file(path) for path in sorted(retired_dir.glob("*.key"))]
        if retired_dir.is_dir()
        else []
    )
    return _read_secret_file(keys_dir / KEK_FILE), retired


def rotate_kek(keys_dir: Path) -> tuple[str, str]:
    """Make a new current KEK in ``keys_dir``; the old one moves to ``retired-keks/`` (it keeps
    unwrapping until every key is re-wrapped). Returns ``(old id, new id)``.

    Crash-safe: the old KEK is written to ``retired-keks/`` durably before ``kek.key`` is
    replaced (atomically), so there is never a moment when it exists nowhere.
    """
    old = _read_secret_file(keys_dir / KEK_FILE)
    old_id = kek_id_of(old)
    retired_dir = keys_dir / RETIRED_KEKS_DIR
    retired_dir.mkdir(mode=0o700, exist_ok=True)
    retired_path = retired_dir / f"{old_id}.key"
    if retired_path.exists():
        if _read_secret_file(retired_path) != old:
            raise ConfigError(f"{retired_path} exists and holds another key")
    else:
        _write_private(retired_path, base64.b64encode(old.reveal()).decode("ascii"), durable=True)
    new = Secret(os.urandom(KEY_SIZE))
    _replace_private(keys_dir / KEK_FILE, base64.b64encode(new.reveal()).decode("ascii"))
    return old_id, kek_id_of(new)


def retired_kek_ids(keys_dir: Path) -> list[str]:
    """Ids of the retired KEKs kept in ``keys_dir``."""
    retired_dir = keys_dir / RETIRED_KEKS_DIR
    return sorted(p.stem for p in retired_dir.glob("*.key")) if retired_dir.is_dir() else []


def remove_retired_kek(keys_dir: Path, kek_id: str) -> None:
    """Delete a retired KEK file (the caller has checked no key row still names it)."""
    if not _KEK_ID.match(kek_id):
        raise ConfigError("malformed key-encryption key id")
    path = keys_dir / RETIRED_KEKS_DIR / f"{kek_id}.key"
    path.unlink()
    fsync_dir(path.parent)


class CheckpointSigner:
    """Ed25519 checkpoint signing key with its note name."""

    __slots__ = ("_private", "verifier")

    def __init__(self, name: str, seed: Secret) -> None:
        if len(seed) != 32:
            raise ConfigError("checkpoint key seed must be 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(seed.reveal())
        public = self._private.public_key().public_bytes_raw()
        self.verifier: Verifier = make_verifier(name, public)

    def __repr__(self) -> str:
        return f"CheckpointSigner(name={self.verifier.name!r}, private=<hidden>)"

    @property
    def name(self) -> str:
        return self.verifier.name

    def sign_checkpoint(self, checkpoint: Checkpoint) -> str:
        """The signed note for ``checkpoint`` (its origin must be this key's name)."""
        if checkpoint.origin != self.verifier.name:
            raise CheckpointError("checkpoint origin must equal the signing key name")
        return sign_note(checkpoint.body(), self.verifier, self._private.sign)

    def encode_private(self) -> str:
        """The sumdb/note signer-key string (secret: only ever written to the key file)."""
        seed = self._private.private_bytes_raw()
        blob = base64.b64encode(bytes([ALG_ED25519]) + seed).decode("ascii")
        return f"PRIVATE+KEY+{self.verifier.name}+{self.verifier.key_hash.hex()}+{blob}"


def parse_signer_key(text: str) -> CheckpointSigner:
    """Parse ``PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>``."""
    parts = text.strip().split("+", 4)  # the base64 key may itself contain "+"
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise ConfigError("checkpoint.key is not a PRIVATE+KEY+<name>+<hash>+<key> string")
    name, hash_hex, blob = parts[2:]
    try:
        check_key_name(name)
        raw = base64.b64decode(blob.encode("ascii"), validate=True)
    except (CheckpointError, binascii.Error, UnicodeEncodeError):
        raise ConfigError("checkpoint.key has a malformed name or key") from None
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise ConfigError("checkpoint.key is not an Ed25519 key")
    signer = CheckpointSigner(name, Secret(raw[1:]))
    if signer.verifier.key_hash.hex() != hash_hex:
        raise ConfigError("checkpoint.key hash does not match its name and key")
    return signer


@dataclass(frozen=True)
class KeyRing:
    """All key material the service needs, loaded from the keys directory."""

    provider: KeyProvider
    indexer: BlindIndexer
    signer: CheckpointSigner

    def __repr__(self) -> str:
        return f"KeyRing(kek_id={self.provider.kek_id!r}, signer={self.signer.name!r})"


def _read_secret_file(path: Path) -> Secret:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"missing key file {path} (run 'audit-ledger keys init')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.__class__.__name__}") from None
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ConfigError(f"key file {path} is not base64") from None
    if len(raw) != KEY_SIZE:
        raise ConfigError(f"key file {path} must hold 32 bytes")
    return Secret(raw)


def load_keys(keys_dir: Path, origin: str) -> KeyRing:
    """Load the key ring from ``keys_dir``; the signing key's name must equal ``origin``."""
    check_key_store_modes(keys_dir)  # 0700/0600 before any key is read (file_modes)
    signer_path = keys_dir / CHECKPOINT_FILE
    try:
        signer = parse_signer_key(signer_path.read_text(encoding="ascii"))
    except FileNotFoundError:
        raise ConfigError(
            f"missing key file {signer_path} (run 'audit-ledger keys init')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {signer_path}: {exc.__class__.__name__}") from None
    if signer.name != origin:
        raise ConfigError(
            f"{signer_path} signs as {signer.name!r} but the checkpoint origin is {origin!r}"
        )
    return KeyRing(
        provider=FileKeyProvider.from_dir(keys_dir),
        indexer=BlindIndexer(_read_secret_file(keys_dir / INDEX_FILE)),
        signer=signer,
    )


def keys_exist(keys_dir: Path) -> bool:  # any of the key files present
    return any((keys_dir / name).exists() for name in (KEK_FILE, INDEX_FILE, CHECKPOINT_FILE))


def _write_private(path: Path, text: str, *, durable: bool = False) -> None:
    # O_EXCL: never overwrite; mode 0600 from creation, so the secret is never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")
        if durable:  # the key must survive a crash once the row that names it commits
            handle.flush()
            os.fsync(handle.fileno())
    if durable:
        fsync_dir(path.parent)


def _replace_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a durable 0600 file holding ``text``."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)  # left by a crash before the rename
    _write_private(temporary, text, durable=True)
    temporary.replace(path)
    fsync_dir(path.parent)


def init_keys(keys_dir: Path, origin: str) -> Verifier:
    """Create fresh key files in ``keys_dir``; refuse if any exists. Return the verifier key."""
    check_key_name(origin)
    if keys_exist(keys_dir):
        raise ConfigError(f"{keys_dir} already holds key files; refusing to overwrite them")
    private_dir(keys_dir)  # 0700 even when it existed (keys/ comes 0755 from git)
    signer = CheckpointSigner(origin, Secret(os.urandom(32)))
    _write_private(keys_dir / KEK_FILE, base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii"))
    _write_private(keys_dir / INDEX_FILE, base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii"))
    _write_private(keys_dir / CHECKPOINT_FILE, signer.encode_private())
    return signer.verifier


def new_key_id() -> str:
    """Random data-key id: carries no personal data, unlike one derived from a user id."""
    return "dk_" + os.urandom(12).hex()
