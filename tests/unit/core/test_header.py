"""Ledger format v1 leaf header (audit_ledger.core.header), DESIGN §3 (normative)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core.canonical import MAX_SAFE_INTEGER, canonical_json
from audit_ledger.core.header import (
    FORMAT_VERSION,
    ZERO_HASH_HEX,
    LeafHeader,
    header_from_dict,
    parse_leaf,
)
from audit_ledger.errors import FormatError

MEMBERS = {
    "v", "seq", "event_id", "category", "event_type", "occurred_at", "recorded_at",
    "writer", "correlation_id", "refs", "key_id", "payload_sha256", "prev",
}  # fmt: skip

EXAMPLE: dict[str, Any] = {
    "v": 1,
    "seq": 7,
    "event_id": "0b7e4a2c-5f1d-4c3e-9a8b-1234567890ab",
    "category": "financial_transactions",
    "event_type": "payment.settled",
    "occurred_at": "2026-11-28T03:55:17.123456Z",
    "recorded_at": "2026-11-28T03:55:18.000000Z",
    "writer": "quickcart-bot",
    "correlation_id": "ord-42",
    "refs": {"order": "ab" * 32, "user": "cd" * 32},
    "key_id": "dek-2026-11",
    "payload_sha256": "ef" * 32,
    "prev": "12" * 32,
}


def _raw(obj: dict[str, Any]) -> bytes:
    """Canonical bytes of an arbitrary object, bypassing the header's validation."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _with(**changes: Any) -> dict[str, Any]:
    obj = dict(EXAMPLE)
    obj.update(changes)
    return obj


# --- strategies ---------------------------------------------------------------------------------

_TEXT_CHARS = st.one_of(
    st.characters(exclude_categories=["Cs"]),
    st.characters(max_codepoint=0x1F),
    st.characters(min_codepoint=0x10000),
    st.sampled_from(['"', "\\", "/", "\x7f", "\u2028", "\ufeff"]),
)
_TEXT = st.text(_TEXT_CHARS, max_size=16)
_NONEMPTY = st.text(_TEXT_CHARS, min_size=1, max_size=16)
_HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_SEQ = st.one_of(st.sampled_from([0, 1, MAX_SAFE_INTEGER]), st.integers(0, MAX_SAFE_INTEGER))


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes())
    micro = draw(st.one_of(st.sampled_from([0, 999_999, 1]), st.integers(0, 999_999)))
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{micro:06d}Z"
    )


@st.composite
def headers(draw: st.DrawFn) -> LeafHeader:
    seq = draw(_SEQ)
    return LeafHeader(
        seq=seq,
        event_id=str(draw(st.uuids())),
        category=draw(_NONEMPTY),
        event_type=draw(_NONEMPTY),
        occurred_at=draw(_timestamps()),
        recorded_at=draw(_timestamps()),
        writer=draw(_NONEMPTY),
        correlation_id=draw(st.none() | _TEXT),
        refs=draw(st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9_]{0,31}\Z"), _TEXT, max_size=4)),
        key_id=draw(st.none() | _TEXT),
        payload_sha256=draw(st.none() | _HEX64),
        prev=ZERO_HASH_HEX if seq == 0 else draw(_HEX64),
    )


# --- encoding -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(headers())
def test_encode_is_rfc8785_and_round_trips(header: LeafHeader) -> None:
    leaf = header.encode()
    assert leaf == rfc8785.dumps(header.to_dict())
    assert leaf == canonical_json(header.to_dict())
    parsed = parse_leaf(leaf)
    assert parsed == header
    assert parsed.encode() == leaf
    assert set(json.loads(leaf)) == MEMBERS


def test_example_leaf_bytes() -> None:
    header = header_from_dict(dict(EXAMPLE))
    assert header.encode() == (
        b'{"category":"financial_transactions","correlation_id":"ord-42",'
        b'"event_id":"0b7e4a2c-5f1d-4c3e-9a8b-1234567890ab","event_type":"payment.settled",'
        b'"key_id":"dek-2026-11","occurred_at":"2026-11-28T03:55:17.123456Z",'
        b'"payload_sha256":"' + b"ef" * 32 + b'","prev":"' + b"12" * 32 + b'",'
        b'"recorded_at":"2026-11-28T03:55:18.000000Z",'
        b'"refs":{"order":"' + b"ab" * 32 + b'","user":"' + b"cd" * 32 + b'"},'
        b'"seq":7,"v":1,"writer":"quickcart-bot"}'
    )
    assert parse_leaf(header.encode()) == header


def test_defaults_and_nulls() -> None:
    header = LeafHeader(
        seq=0,
        event_id="00000000-0000-0000-0000-000000000000",
        category="c",
        event_type="t",
        occurred_at="0001-01-01T00:00:00.000000Z",
        recorded_at="9999-12-31T23:59:59.999999Z",
        writer="w",
        correlation_id=None,
    )
    assert header.v == FORMAT_VERSION == 1
    assert header.prev == ZERO_HASH_HEX == "0" * 64
    assert header.to_dict()["refs"] == {}
    leaf = header.encode()
    assert b'"correlation_id":null' in leaf
    assert b'"key_id":null' in leaf
    assert b'"payload_sha256":null' in leaf
    assert b'"refs":{}' in leaf
    assert parse_leaf(leaf) == header
    assert parse_leaf(bytearray(leaf)) == header  # type: ignore[arg-type]
    assert parse_leaf(memoryview(leaf)) == header  # type: ignore[arg-type]


# --- parse_leaf rejects everything that is not exactly canonical v1 ----------------------------


def _assert_rejected(leaf: bytes) -> None:
    with pytest.raises(FormatError):
        parse_leaf(leaf)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b" " + b,
        lambda b: b + b"\n",
        lambda b: b.replace(b":", b": ", 1),
        lambda b: b.replace(b",", b", ", 1),
        lambda b: b.replace(b"{", b"{ ", 1),
        lambda b: b.replace(b'"seq":7', b'"seq":07'),
        lambda b: b.replace(b'"seq":7', b'"seq":7.0'),
        lambda b: b.replace(b'"seq":7', b'"seq":7e0'),
        lambda b: b.replace(b'"seq":7', b'"seq":\t7'),
        lambda b: b.replace(b"quickcart-bot", b"quickcart\\u002dbot"),  # escaped where not needed
        lambda b: b.replace(b"quickcart-bot", b"quickcart\\/bot"),
        lambda b: b.replace(b"\xc3\xa9", b"\\u00e9"),
        lambda b: b.replace(b"\\u001f", b"\\u001F"),
        lambda b: b.replace(b"\\n", b"\\u000a"),
        lambda b: b[:-1],
        lambda b: b + b"{}",
        lambda b: b"\xef\xbb\xbf" + b,
        lambda b: b.replace(b"\xc3\xa9", b"\xe9"),  # Latin-1, not UTF-8
        lambda b: b.replace(b"\xc3\xa9", b"\xc3"),  # truncated UTF-8
    ],
)
def test_rejects_non_canonical_bytes(mangle: Any) -> None:
    leaf = header_from_dict(_with(writer="quickcart-bot", category="caf\u00e9\x1f\n")).encode()
    for needle in (b"\xc3\xa9", b"\\u001f", b"\\n"):  # the mangles below need these
        assert needle in leaf
    mangled = mangle(leaf)
    assert mangled != leaf
    _assert_rejected(mangled)


def test_rejects_reordered_keys() -> None:
    leaf = json.dumps(EXAMPLE, separators=(",", ":"), ensure_ascii=False).encode()
    assert leaf != _raw(EXAMPLE)
    _assert_rejected(leaf)
    refs_reversed = dict(EXAMPLE)
    refs_reversed["refs"] = {"user": "cd" * 32, "order": "ab" * 32}
    text = _raw(EXAMPLE).replace(
        json.dumps(EXAMPLE["refs"], separators=(",", ":")).encode(),
        json.dumps(refs_reversed["refs"], separators=(",", ":")).encode(),
    )
    assert text != _raw(EXAMPLE)
    _assert_rejected(text)
    _assert_rejected(json.dumps(EXAMPLE, sort_keys=True).encode())  # default separators
    _assert_rejected(json.dumps(EXAMPLE, sort_keys=True, separators=(",", ":")).encode()[:-1])


def test_rejects_duplicate_members() -> None:
    leaf = _raw(EXAMPLE)
    _assert_rejected(leaf[:-1] + b',"writer":"quickcart-bot"}')
    _assert_rejected(b'{"category":"x",' + leaf[1:])


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_rejects_missing_member(member: str) -> None:
    obj = dict(EXAMPLE)
    del obj[member]
    _assert_rejected(_raw(obj))
    with pytest.raises(FormatError):
        header_from_dict(obj)


@pytest.mark.parametrize("extra", ["extra", "V", "Seq", "payload", "", "\u00e9"])
def test_rejects_unknown_member(extra: str) -> None:
    obj = _with(**{extra: 1})
    _assert_rejected(_raw(obj))
    with pytest.raises(FormatError):
        header_from_dict(obj)


_UUID = "0b7e4a2c-5f1d-4c3e-9a8b-1234567890ab"
_WRONG_VALUES: list[tuple[str, Any]] = [
    # version
    ("v", 2),
    ("v", 0),
    ("v", "1"),
    ("v", True),
    ("v", None),
    # seq: integers only, not bools, non-negative, below 2^53
    ("seq", True),
    ("seq", False),
    ("seq", "7"),
    ("seq", -1),
    ("seq", MAX_SAFE_INTEGER + 1),
    ("seq", 2**64),
    ("seq", None),
    ("seq", [7]),
    # event_id: lower-case hyphenated UUID
    ("event_id", _UUID.upper()),
    ("event_id", "0B7E4A2C-5f1d-4c3e-9a8b-1234567890ab"),
    ("event_id", _UUID.replace("-", "")),
    ("event_id", "{" + _UUID + "}"),
    ("event_id", "urn:uuid:" + _UUID),
    ("event_id", _UUID[:-1]),
    ("event_id", _UUID + "0"),
    ("event_id", _UUID.replace("a", "g", 1)),
    ("event_id", 1),
    ("event_id", None),
    # strings
    ("category", ""),
    ("category", None),
    ("category", 1),
    ("category", ["financial_transactions"]),
    ("event_type", ""),
    ("event_type", True),
    ("writer", ""),
    ("writer", None),
    ("correlation_id", 5),
    ("correlation_id", False),
    ("correlation_id", {}),
    ("key_id", 1),
    ("key_id", []),
    # timestamps: canonical only
    ("occurred_at", "2026-11-28T03:55:17.123Z"),
    ("occurred_at", "2026-11-28T03:55:17Z"),
    ("occurred_at", "2026-11-28T03:55:17.1234567Z"),
    ("occurred_at", "2026-11-28T10:55:17.123456+07:00"),
    ("occurred_at", "2026-11-28T03:55:17.123456+00:00"),
    ("occurred_at", "2026-11-28T03:55:17.123456z"),
    ("occurred_at", "2026-11-28t03:55:17.123456Z"),
    ("occurred_at", "2026-02-30T03:55:17.123456Z"),
    ("occurred_at", "2026-11-28T03:55:17.123456"),
    ("occurred_at", 1764301517),
    ("occurred_at", None),
    ("recorded_at", "2026-11-28 03:55:18.000000Z"),
    ("recorded_at", "2026-13-28T03:55:18.000000Z"),
    ("recorded_at", None),
    # refs: object of ASCII-identifier names -> strings
    ("refs", None),
    ("refs", []),
    ("refs", "order=ab"),
    ("refs", {"order": 1}),
    ("refs", {"order": None}),
    ("refs", {"order": ["ab"]}),
    ("refs", {"Order": "ab"}),
    ("refs", {"1order": "ab"}),
    ("refs", {"": "ab"}),
    ("refs", {"or-der": "ab"}),
    ("refs", {"\u00f6rder": "ab"}),
    ("refs", {"o" * 33: "ab"}),
    # hex digests: 64 lower-case hex digits
    ("payload_sha256", "EF" * 32),
    ("payload_sha256", "ef" * 31),
    ("payload_sha256", "ef" * 33),
    ("payload_sha256", "eg" * 32),
    ("payload_sha256", ""),
    ("payload_sha256", 0),
    ("prev", "12" * 31 + "1G"),
    ("prev", "AB" * 32),
    ("prev", "12" * 32 + "\n"),
    ("prev", None),
    ("prev", ""),
    ("prev", 0),
]


@pytest.mark.parametrize(("member", "value"), _WRONG_VALUES)
def test_rejects_wrong_values(member: str, value: Any) -> None:
    obj = _with(**{member: value})
    _assert_rejected(_raw(obj))
    with pytest.raises(FormatError):
        header_from_dict(obj)
    with pytest.raises(FormatError):
        LeafHeader(**obj)


def test_seq_zero_needs_zero_prev() -> None:
    _assert_rejected(_raw(_with(seq=0, prev="12" * 32)))
    _assert_rejected(_raw(_with(seq=0, prev="0" * 63 + "1")))
    assert parse_leaf(_raw(_with(seq=0, prev=ZERO_HASH_HEX))).seq == 0
    # Later entries may (improbably) have any prev, including zeros: the chain checks it.
    assert parse_leaf(_raw(_with(seq=1, prev=ZERO_HASH_HEX))).seq == 1


def test_seq_boundaries() -> None:
    assert parse_leaf(_raw(_with(seq=MAX_SAFE_INTEGER))).seq == MAX_SAFE_INTEGER
    assert b'"seq":9007199254740991' in _raw(_with(seq=MAX_SAFE_INTEGER))
    _assert_rejected(_raw(_with(seq=MAX_SAFE_INTEGER + 1)))


@pytest.mark.parametrize(
    "leaf",
    [
        b"",
        b"null",
        b"[]",
        b"1",
        b'"leaf"',
        b"{}",
        b"\xff",
        b'{"v":1.0}',
        b'{"v":NaN}',
    ],
)
def test_rejects_non_headers(leaf: bytes) -> None:
    _assert_rejected(leaf)


@pytest.mark.parametrize("value", ["leaf", None, 1, ["x"], EXAMPLE])
def test_parse_leaf_rejects_non_bytes(value: Any) -> None:
    with pytest.raises(FormatError):
        parse_leaf(value)


@pytest.mark.parametrize("value", [None, [], "x", 1, [("v", 1)]])
def test_header_from_dict_rejects_non_objects(value: Any) -> None:
    with pytest.raises(FormatError):
        header_from_dict(value)


def test_lone_surrogates_rejected_in_every_text_member() -> None:
    for member in ("category", "event_type", "writer", "correlation_id", "key_id"):
        with pytest.raises(FormatError):
            LeafHeader(**_with(**{member: "bad\ud800"}))
    with pytest.raises(FormatError):
        LeafHeader(**_with(refs={"order": "\udfff"}))
    # ... and in the bytes: a JSON escape of a lone surrogate parses to such a string.
    _assert_rejected(_raw(EXAMPLE).replace(b"quickcart-bot", b"\\ud800"))


def test_header_is_immutable() -> None:
    header = header_from_dict(dict(EXAMPLE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.seq = 8  # type: ignore[misc]
