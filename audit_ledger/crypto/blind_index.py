"""Blind indexes: HMAC-SHA256 of identifiers, so lookups never store or carry plaintext.

index = HMAC-SHA256(index key, ref name || 0x00 || value), value as a decimal or plain string,
so ``user_id`` 123 and "123" match (DESIGN §4 guidance). The ref name is mixed in so that the
same value under different names (a user id equal to an order id) gives unrelated indexes.
"""

from __future__ import annotations

import hashlib

from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import CryptoError

_BLOCK = 64  # SHA-256 block size in bytes


def ref_value_text(value: object) -> str:
    """The string form that is indexed: integers in decimal, strings as they are."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise CryptoError("reference values must be strings or integers")
    return str(value)


class BlindIndexer:
    """Computes blind indexes under one HMAC key."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: Secret) -> None:
        if len(key) < 32:
            raise CryptoError("blind index key must be at least 32 bytes")
        # RFC 2104 with the keyed inner and outer states computed once: each index is then two
        # SHA-256 state copies instead of a full HMAC set-up (it runs for every ref of every
        # event). Keys longer than the 64-byte block are hashed first, as RFC 2104 says.
        raw = key.reveal()
        if len(raw) > _BLOCK:
            raw = hashlib.sha256(raw).digest()
        raw = raw.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in raw))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in raw))

    def __repr__(self) -> str:
        return "BlindIndexer(key=<hidden>)"

    def index(self, name: str, value: object) -> str:
        """Lower-case hex blind index of ``value`` under ref ``name``."""
        message = name.encode("utf-8") + b"\x00" + ref_value_text(value).encode("utf-8")
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()
