"""``AUDIT_LEDGER_WITNESSES``: ``URL VKEY[, URL VKEY]…`` parsed into witness targets; every bad
entry is one ConfigError line naming the variable and the entry's position, never its text."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_ledger.core.checkpoint import make_verifier
from audit_ledger.core.cosignature import make_cosigner_key
from audit_ledger.errors import ConfigError
from audit_ledger.settings import load_settings, parse_witnesses


def _vkey(name: str) -> str:
    return make_cosigner_key(
        name, Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    ).encode()


def test_pairs_are_parsed() -> None:
    one, two = _vkey("w1.example/w"), _vkey("w2.example/w")
    parsed = parse_witnesses(f" https://w1.example/prefix/ {one} ,\nhttp://10.0.0.2:8080 {two},")
    assert [(url, key.encode()) for url, key in parsed] == [
        ("https://w1.example/prefix", one),
        ("http://10.0.0.2:8080", two),
    ]
    assert parse_witnesses("") == []
    assert load_settings(witnesses=f"https://w1.example {one}").witnesses


@pytest.mark.parametrize(
    "value",
    [
        "https://w1.example",  # no key
        "ftp://w1.example KEY",
        "https://w1.example not-a-key",
        "https://w1.example LOGKEY",  # a log's (type 0x01) key is not a cosigner key
        "https://w1.example W1, https://w2.example W1",  # the same key twice
        "https://w1.example W1 extra",
    ],
)
def test_bad_entries(value: str) -> None:
    w1 = _vkey("w1.example/w")
    log_key = make_verifier(
        "log.example/l", Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    ).encode()
    value = value.replace("LOGKEY", log_key).replace("W1", w1)
    with pytest.raises(ConfigError) as raised:
        load_settings(witnesses=value)
    message = str(raised.value)
    assert message.startswith("invalid settings: AUDIT_LEDGER_WITNESSES: entry ")
    assert "\n" not in message
    assert w1 not in message
    assert "w1.example" not in message
