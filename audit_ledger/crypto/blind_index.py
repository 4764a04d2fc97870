"""Blind indexes: HMAC-SHA256 of identifiers, so lookups never store or carry plaintext.

index = HMAC-SHA256(index key, ref name || 0x00 || value), value as a decimal or plain string,
so ``user_id`` 123 and "123" match (DESIGN §4 guidance). The ref name is mixed in so that the
same value under different names (a user id equal to an order id) gives unrelated indexes.
"""

from __future__ import annotations

import hashlib
import hmac

from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import CryptoError


def ref_value_text(value: object) -> str:
    """The string form that is indexed: integers in decimal, strings as they are."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise CryptoError("reference values must be strings or integers")
    return str(value)


class BlindIndexer:
    """Computes blind indexes under one HMAC key."""

    __slots__ = ("_key",)

    def __init__(self, key: Secret) -> None:
        if len(key) < 32:
            raise CryptoError("blind index key must be at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "BlindIndexer(key=<hidden>)"

    def index(self, name: str, value: object) -> str:
        """Lower-case hex blind index of ``value`` under ref ``name``."""
        message = name.encode("utf-8") + b"\x00" + ref_value_text(value).encode("utf-8")
        return hmac.new(self._key.reveal(), message, hashlib.sha256).hexdigest()
