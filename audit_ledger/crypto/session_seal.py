"""Sealed console sessions: AES-256-GCM over a small JSON claim, and the key that seals them.

A console session lives in the browser as one opaque cookie value: confidentiality and integrity
from AES-256-GCM (NIST SP 800-38D; 96-bit random nonce per seal), with the cookie's purpose as
associated data so a sealed value minted for one use cannot be replayed as another. The key is
``console-session.key`` in the keys directory, created on first use (0600, written aside and
linked into place, so concurrent workers end up with the same key): every worker of a server,
and a restarted server, accept the same cookies. A read-only keys directory falls back to a
per-process key (sessions then end with the process and do not cross workers), which
:attr:`SessionKey.ephemeral` reports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_KEY_FILE = "console-session.key"
_NONCE = 12


@dataclass(frozen=True, slots=True)
class SessionKey:
    """The sealing key and whether it lives only in this process."""

    secret: bytes
    ephemeral: bool

    def __repr__(self) -> str:
        return f"SessionKey(ephemeral={self.ephemeral})"

    def seal(self, data: bytes, purpose: bytes) -> str:
        nonce = secrets.token_bytes(_NONCE)
        sealed = nonce + AESGCM(self.secret).encrypt(nonce, data, purpose)
        return base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")

    def unseal(self, value: str, purpose: bytes) -> bytes | None:
        """The sealed bytes, or None for anything this key did not seal for ``purpose``."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= _NONCE + 16:
            return None
        try:
            return AESGCM(self.secret).decrypt(raw[:_NONCE], raw[_NONCE:], purpose)
        except InvalidTag:
            return None

    def mac(self, label: bytes, data: bytes) -> str:
        """HMAC-SHA-256 (RFC 2104) under a key derived for ``label``, as hex."""
        derived = hmac.new(self.secret, b"audit-ledger console " + label, hashlib.sha256).digest()
        return hmac.new(derived, data, hashlib.sha256).hexdigest()


def load_session_key(keys_dir: Path) -> SessionKey:
    """The keys directory's session key, created on first use; a per-process key if the
    directory cannot be written."""
    path = Path(keys_dir) / SESSION_KEY_FILE
    for _ in range(2):
        try:
            text = path.read_text(encoding="ascii").strip()
            secret = bytes.fromhex(text)
            if len(secret) == 32:
                return SessionKey(secret, ephemeral=False)
            break  # a damaged file: never overwrite a key, fall back below
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            break
        secret = secrets.token_bytes(32)
        # Written whole to a private temporary file, then linked into place: link() fails if
        # the name exists, so a concurrent worker never reads a half-written key.
        tmp = path.with_name(f".{SESSION_KEY_FILE}.{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secret.hex() + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
        except FileExistsError:
            continue  # another worker won the race: read its key
        except OSError:
            break
        finally:
            tmp.unlink(missing_ok=True)
        return SessionKey(secret, ephemeral=False)
    return SessionKey(secrets.token_bytes(32), ephemeral=True)
