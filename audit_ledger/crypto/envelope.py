"""AES-256-GCM payload envelopes (DESIGN §3, normative).

blob = nonce(12) || ciphertext || tag(16). The nonce is fresh and random for every seal; a data
key seals at most 2**28 payloads (enforced by the key ring), which keeps the chance of a nonce
collision below 2**-40 (NIST SP 800-38D §8.3 allows 2**32 random nonces per key). The associated
data binds a blob to its entry — ``{"category", "event_id", "key_id", "v": 1}`` as canonical JSON
— so a blob copied to another entry fails to open.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit_ledger.core.canonical import canonical_json_ascii_keys
from audit_ledger.core.header import FORMAT_VERSION
from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import CryptoError

NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
#: DESIGN §3: a data key encrypts at most 2**28 payloads, then it is replaced.
MAX_SEALS_PER_KEY = 2**28


def payload_aad(category: str, event_id: str, key_id: str) -> bytes:
    """Associated data that binds a payload blob to its entry."""
    # Every member name is ASCII and every value a string the header already validated.
    return canonical_json_ascii_keys(
        {"category": category, "event_id": event_id, "key_id": key_id, "v": FORMAT_VERSION}
    )


class DataKey:
    """A data-encryption key (DEK) with its id. The key bytes never appear in ``repr``."""

    __slots__ = ("_aead", "key_id", "secret")

    def __init__(self, key_id: str, secret: Secret) -> None:
        if len(secret) != KEY_SIZE:
            raise CryptoError("data key must be 32 bytes (AES-256)")
        self.key_id = key_id
        self.secret = secret
        self._aead = AESGCM(secret.reveal())

    @classmethod
    def generate(cls, key_id: str) -> DataKey:
        return cls(key_id, Secret(AESGCM.generate_key(bit_length=256)))

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id!r}, secret=<hidden>)"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` under a fresh random nonce; return nonce || ct || tag."""
        return self._seal_with_nonce(os.urandom(NONCE_SIZE), plaintext, aad)

    def _seal_with_nonce(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        # The one place a blob is assembled. Private: the NIST CAVP known-answer tests inject
        # the vector's IV here (tests/unit/crypto/test_known_answers.py); every production
        # nonce comes from seal(), fresh and random.
        if len(nonce) != NONCE_SIZE:
            raise CryptoError("nonce must be 12 bytes")
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob; any change to nonce, ciphertext, tag or AAD raises CryptoError."""
        if len(blob) < NONCE_SIZE + TAG_SIZE:
            raise CryptoError("payload blob is too short")
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise CryptoError("payload blob failed authentication") from None


def blob_sha256(blob: bytes) -> str:
    """Lower-case hex SHA-256 of a stored blob (the header's ``payload_sha256``)."""
    return hashlib.sha256(blob).hexdigest()
