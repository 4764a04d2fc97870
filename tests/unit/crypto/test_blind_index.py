"""Blind index: HMAC-SHA256 (RFC 2104) of ``name || 0x00 || value``, checked against ``hmac``."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import CryptoError


@given(
    key=st.binary(min_size=32, max_size=200),
    name=st.text(min_size=1, max_size=20),
    value=st.one_of(st.text(max_size=300), st.integers(min_value=-(2**63), max_value=2**63)),
)
def test_index_is_hmac_sha256_of_name_nul_value(key: bytes, name: str, value: str | int) -> None:
    # Keys longer than SHA-256's 64-byte block are hashed first (RFC 2104 §2): covered too.
    message = name.encode() + b"\x00" + str(value).encode()
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    assert BlindIndexer(Secret(key)).index(name, value) == expected


def test_integer_and_decimal_string_match_and_names_separate() -> None:
    indexer = BlindIndexer(Secret(b"k" * 32))
    assert indexer.index("user", 123) == indexer.index("user", "123")
    assert indexer.index("user", 123) != indexer.index("order", 123)


def test_repeated_calls_do_not_share_state() -> None:
    indexer = BlindIndexer(Secret(b"k" * 32))
    first = indexer.index("user", "a")
    indexer.index("user", "b" * 1000)
    assert indexer.index("user", "a") == first


@pytest.mark.parametrize("value", [True, 1.5, None, [1], {"a": 1}])
def test_only_strings_and_integers_are_indexed(value: object) -> None:
    with pytest.raises(CryptoError):
        BlindIndexer(Secret(b"k" * 32)).index("user", value)


def test_short_key_is_refused_and_repr_hides_key_material() -> None:
    with pytest.raises(CryptoError):
        BlindIndexer(Secret(b"k" * 31))
    assert "k" * 8 not in repr(BlindIndexer(Secret(b"k" * 32)))
