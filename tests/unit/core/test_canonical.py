"""RFC 8785 canonical JSON and strict parsing (audit_ledger.core.canonical).

The reference is the ``rfc8785`` package (Trail of Bits), not our own reasoning about JCS.
"""

from __future__ import annotations

import decimal
import json
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core.canonical import (
    MAX_SAFE_INTEGER,
    canonical_json,
    canonical_json_ascii_keys,
    canonical_plain,
    strict_loads,
)
from audit_ledger.errors import FormatError

# Characters JCS treats specially, plus a spread of planes (no surrogates: those are not text).
_SPECIAL = st.sampled_from(
    ['"', "\\", "/", "\x7f", "\x80", "\u2028", "\u2029", "\ufeff", "\ufffd", "\uffff", "\x00"]
)
_CHARS = st.one_of(
    st.characters(exclude_categories=["Cs"]),  # every code point except surrogates
    st.characters(max_codepoint=0x1F),  # control characters
    st.characters(min_codepoint=0x10000),  # astral plane
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF),  # above the surrogate block
    _SPECIAL,
)
TEXT = st.text(_CHARS, max_size=12)
INTS = st.one_of(
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    st.sampled_from(
        [0, 1, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER - 1, 2**31, -(2**31)]
    ),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(TEXT, children, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_canonical_json_equals_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(TEXT, SCALARS, min_size=2, max_size=12))
def test_member_order_equals_rfc8785(value: dict[str, Any]) -> None:
    # Objects with many non-ASCII names: the UTF-16 ordering rule is where JCS is subtle.
    assert canonical_json(value) == rfc8785.dumps(value)


ASCII_KEYS = st.text(st.characters(max_codepoint=0x7F), max_size=8)
JSON_ASCII_KEYS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(ASCII_KEYS, children, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(ASCII_KEYS, JSON_ASCII_KEYS, max_size=6))
def test_ascii_key_fast_path_equals_rfc8785(value: dict[str, Any]) -> None:
    # Member names ASCII at every level (the header's case): code-point order = UTF-16 order.
    assert canonical_json_ascii_keys(value) == rfc8785.dumps(value) == canonical_json(value)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_strict_loads_round_trips(value: Any) -> None:
    encoded = canonical_json(value)
    assert strict_loads(encoded) == value
    assert strict_loads(encoded.decode("utf-8")) == value


def test_ascii_fast_path_is_only_for_ascii_names() -> None:
    # Documents why the fast path must not see non-ASCII names: sort_keys orders by code
    # point, JCS by UTF-16 code unit, and the two disagree above the surrogate block.
    value = {"\ue000": 1, "\U00010000": 2}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json_ascii_keys(value) != rfc8785.dumps(value)


def test_rfc8785_sorting_example() -> None:
    # RFC 8785 §3.2.3: members sorted by UTF-16 code units, so U+1F600 (D83D DE00) sorts
    # before U+FB33 although its code point is larger.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode()
    assert canonical_json(value) == expected
    assert rfc8785.dumps(value) == expected


def test_rfc8785_string_escaping_example() -> None:
    # RFC 8785 §3.2.2.2: "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/"
    value = '\u20ac$\x0f\nA\'B"\\\\"/'
    expected = '"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()
    assert canonical_json(value) == expected
    assert rfc8785.dumps(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\b\t\n\f\r", b'"\\b\\t\\n\\f\\r"'),
        ("\x00\x01\x1f", b'"\\u0000\\u0001\\u001f"'),
        ("\x7f\u2028", '"\x7f\u2028"'.encode()),
        ("", b'""'),
        ({}, b"{}"),
        ([], b"[]"),
        ({"": ""}, b'{"":""}'),
        (None, b"null"),
        (True, b"true"),
        (False, b"false"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
        ((1, "a"), b'[1,"a"]'),
        ({"b": [1, {"d": 1, "c": 2}], "a": None}, b'{"a":null,"b":[1,{"c":2,"d":1}]}'),
    ],
)
def test_known_encodings(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        0.0,
        -0.0,
        1.5,
        math.nan,
        math.inf,
        -math.inf,
        [1, 2.5],
        {"a": {"b": 1e10}},
    ],
)
def test_floats_are_refused(value: Any) -> None:
    with pytest.raises(FormatError):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [2**53, -(2**53), 2**63, -(2**64), 10**400, [2**53], {"n": -(2**53)}],
)
def test_out_of_range_integers_are_refused(value: Any) -> None:
    with pytest.raises(FormatError):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [
        # chr() rather than escapes: linters see every lone surrogate literal as U+FFFD.
        chr(0xD800),
        chr(0xDFFF),
        "a" + chr(0xDC00) + "b",
        chr(0xDBFF) + chr(0xDFFF),  # a surrogate *pair* as two code points is still not text
        ["ok", chr(0xD83D)],
        {chr(0xD800): 1},
        {"k": {chr(0xDFFF): "v"}},
        {"k": chr(0xD800)},
    ],
)
def test_lone_surrogates_are_refused(value: Any) -> None:
    with pytest.raises(FormatError):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [
        b"bytes",
        {1, 2},
        object(),
        decimal.Decimal("1.5"),
        {1: "int key"},
        {True: "bool key"},
        {None: "null key"},
        {("a",): 1},
        [b"x"],
    ],
)
def test_unsupported_values_are_refused(value: Any) -> None:
    with pytest.raises(FormatError):
        canonical_json(value)


# --- strict_loads -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1.0",
        "1e5",
        "1E-2",
        "-0.0",
        '{"amount": 10.5}',
        "[1, 2.0]",
        "NaN",
        "Infinity",
        "-Infinity",
        "[NaN]",
        '{"a": 1, "a": 2}',
        '{"a": 1, "a": 1}',
        '{"x": {"b": 1, "b": 2}}',
        '[{"a": 1}, {"c": 1, "c": null}]',
        "",
        " ",
        "{",
        "[1,]",
        '{"a":1,}',
        "tru",
        "'single'",
        '"unterminated',
        '"control \x01 char"',
        "01",
        "1 2",
        "{} x",
        "\ufeff{}",
        "[" * 100_000 + "]" * 100_000,  # too deep for the parser: still FormatError
        "1" * 5000,  # longer than int's digit limit
    ],
)
def test_strict_loads_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        strict_loads(text)
    with pytest.raises(FormatError):
        strict_loads(text.encode("utf-8"))


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b'"\xc3"',
        b'"\xed\xa0\x80"',  # UTF-8 encoded surrogate
        b'{"a": "\xfe"}',
        b'"\xc0\xaf"',  # overlong
        b"\xef\xbb\xbf{}",  # UTF-8 byte order mark
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-16-le"),
        '{"a": 1}'.encode("utf-32"),
        '"a"'.encode("utf-16-be"),
    ],
)
def test_strict_loads_rejects_bytes_that_are_not_utf8(data: bytes) -> None:
    with pytest.raises(FormatError):
        strict_loads(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"a": 1, "b": [true, null, "x"]}', {"a": 1, "b": [True, None, "x"]}),
        (b'{"\xc3\xa9": -9007199254740991}', {"\u00e9": -MAX_SAFE_INTEGER}),
        ('"\\ud83d\\ude00"', "\U0001f600"),
        (bytearray(b"[1]"), [1]),
        (" 0 ", 0),
        ("-0", 0),
    ],
)
def test_strict_loads_accepts(data: str | bytes, expected: Any) -> None:
    result = strict_loads(data)
    assert result == expected
    assert json.dumps(result) == json.dumps(expected)


# --- the fast paths: canonical_plain and strict_loads' orjson path -------------------------------


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(1, 6))
def test_canonical_plain_is_canonical_json_or_declines(value: Any, depth: int) -> None:
    plain = canonical_plain(value, depth)
    if plain is not None:
        assert plain == rfc8785.dumps(value) == canonical_json(value)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(ASCII_KEYS, JSON_ASCII_KEYS, max_size=6))
def test_canonical_plain_takes_plain_ascii_records(value: dict[str, Any]) -> None:
    # ASCII names and strings (the usual event data): the fast path must not decline them.
    if canonical_json(value).isascii():
        assert canonical_plain(value, 64) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"amount": 1.5},
        {"n": MAX_SAFE_INTEGER + 1},
        {"n": -MAX_SAFE_INTEGER - 1},
        {"nested": [{"deeper": {"deepest": {}}}]},  # four levels: over the limit of 3 below
        {"t": (1, 2)},  # a tuple: the general path decides what it is
        {1: "non-string name"},
        {"name": "caf\u00e9"},  # non-ASCII output: the general path orders the names
        {"\ue000": 1},
        {"lone": "\ud800"},
        {"flag": True, "sub": {"x": 2.0}},
    ],
)
def test_canonical_plain_declines(value: Any) -> None:
    assert canonical_plain(value, 3) is None


def test_canonical_plain_depth_counts_the_value_itself() -> None:
    assert canonical_plain({"a": {"b": []}}, 3) == b'{"a":{"b":[]}}'
    assert canonical_plain({"a": {"b": []}}, 2) is None
    assert canonical_plain({"a": 1}, 1) == b'{"a":1}'


def _reference_loads(text: str) -> Any:
    """What strict_loads must do, written plainly with the standard library only."""

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise FormatError("duplicate")
        return dict(pairs)

    def refuse(_: str) -> Any:
        raise FormatError("refused")

    try:
        return json.loads(
            text, parse_float=refuse, parse_constant=refuse, object_pairs_hook=members
        )
    except (ValueError, RecursionError):
        raise FormatError("invalid") from None


def _object_text(members: list[tuple[str, str, bool]]) -> str:
    return "{" + ", ".join(f"{json.dumps(n, ensure_ascii=a)}: {v}" for n, v, a in members) + "}"


# Texts with frequent repeated names, floats, escapes and non-ASCII: where orjson and the
# stdlib could disagree.
_NAMES = st.one_of(st.sampled_from(["a", "b", "\u00e9", '"', "x\\y", "a "]), TEXT)
_LEAF_TEXTS = st.one_of(
    SCALARS.map(json.dumps),
    st.builds(json.dumps, TEXT, ensure_ascii=st.booleans()),
    st.floats(allow_nan=False).map(json.dumps),
    st.sampled_from(["1e5", "-0", "1.0", "NaN", "-Infinity", "1" * 30, '"\\ud800"', "tru"]),
)
JSON_TEXTS = st.recursive(
    _LEAF_TEXTS,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(_NAMES, children, st.booleans()), max_size=4).map(_object_text),
    ),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(JSON_TEXTS)
def test_strict_loads_agrees_with_the_plain_stdlib_parser(text: str) -> None:
    try:
        expected = _reference_loads(text)
    except FormatError:
        with pytest.raises(FormatError):
            strict_loads(text)
        return
    result = strict_loads(text)
    assert result == expected
    assert json.dumps(result) == json.dumps(expected)  # same types too (no 1 vs 1.0)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 1}',
        '{"a": "x", "b": {"c": 1, "c": "y"}}',
        '[{"k": []}, {"k": [], "k": []}]',
        '{"a": {"b": 1}, "a": {"b": 1}}',
    ],
)
def test_repeated_names_are_refused_on_the_fast_path(text: str) -> None:
    assert "\\" not in text  # no escapes: the orjson path is the one taken
    with pytest.raises(FormatError, match="duplicate object member"):
        strict_loads(text)
