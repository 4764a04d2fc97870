"""The witness's own Ed25519 cosigning key (tlog-cosignature v1, key type 0x04).

One file, ``witness.key`` in the witness's keys directory (mode 0600, directory 0700), holding
``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x04 || 32-byte seed)>`` — the sumdb/note signer-key
shape with the cosignature key type. The private key never leaves this module's
:class:`WitnessSigner`; only the verifier key (``name+hash+base64(0x04 || public key)``) is shown.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_ledger.core.checkpoint import check_key_name
from audit_ledger.core.cosignature import (
    ALG_COSIGNATURE_V1,
    Cosignature,
    CosignerKey,
    cosign,
    make_cosigner_key,
)
from audit_ledger.durable import fsync_dir
from audit_ledger.errors import CheckpointError, ConfigError

KEY_FILE = "witness.key"


class WitnessSigner:
    """The witness's private key with its cosigner (verifier) key."""

    __slots__ = ("_private", "key")

    def __init__(self, name: str, seed: bytes) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.key: CosignerKey = make_cosigner_key(
            name, self._private.public_key().public_bytes_raw()
        )

    def __repr__(self) -> str:
        return f"WitnessSigner(name={self.key.name!r}, private=<hidden>)"

    def cosign(self, body: str, timestamp: int) -> Cosignature:
        return cosign(body, self.key, self._private.sign, timestamp)

    def _encode_private(self) -> str:
        blob = bytes([ALG_COSIGNATURE_V1]) + self._private.private_bytes_raw()
        encoded = base64.b64encode(blob).decode("ascii")
        return f"PRIVATE+KEY+{self.key.name}+{self.key.key_hash.hex()}+{encoded}\n"


def init_witness_key(keys_dir: Path, name: str) -> CosignerKey:
    """Create a new witness key under ``name``; refuses to overwrite an existing one."""
    try:
        check_key_name(name)
    except CheckpointError:
        raise ConfigError("witness name must be non-empty, without spaces or '+'") from None
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys_dir.chmod(0o700)
    path = keys_dir / KEY_FILE
    signer = WitnessSigner(name, os.urandom(32))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists (refusing to overwrite a witness key)") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(signer._encode_private())
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(keys_dir)
    return signer.key


def load_witness_key(keys_dir: Path) -> WitnessSigner:
    """Read the witness key; refuses a key file others may read."""
    path = keys_dir / KEY_FILE
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(f"no witness key at {path} (run 'audit-ledger witness init')") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"cannot read the witness key {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others (chmod 600 it)")
    parts = text.strip().split("+", 4)  # the base64 key may itself contain "+"
    bad = ConfigError(f"{path} is not a PRIVATE+KEY+<name>+<hash>+<key> witness key")
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise bad
    name, hash_hex, blob = parts[2:]
    try:
        raw = base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise bad from None
    if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
        raise bad
    try:
        signer = WitnessSigner(name, raw[1:])
    except CheckpointError:
        raise bad from None
    if signer.key.key_hash.hex() != hash_hex:
        raise bad
    return signer
