"""RFC 8785 (JSON Canonicalization Scheme) encoding for the values the ledger commits to.

The ledger only ever canonicalises strings, integers with |n| < 2**53, booleans, null, arrays and
objects: floats are refused outright (money is never a float, DESIGN §2), which removes the only
hard part of JCS (ECMAScript number formatting). For that subset, JCS output is exactly
``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` with object members ordered by the
UTF-16 code units of their names (RFC 8785 §3.2.3). ``orjson`` with ``OPT_SORT_KEYS`` writes the
same bytes ten times faster (same escapes: ``\\b \\t \\n \\f \\r``, other controls as
``\\u00xx``, everything else verbatim UTF-8) and orders members by code point, which equals UTF-16
order unless a name holds a character at or above U+E000. The property tests compare against the
``rfc8785`` package rather than trusting this argument.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from audit_ledger.core.text import _SAFE_NAME, shown_name
from audit_ledger.errors import FormatError

#: RFC 8785 §3.2.2.3 / I-JSON: integers outside this range lose precision in IEEE-754 readers.
MAX_SAFE_INTEGER = 2**53 - 1

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _normalise(value: Any, path: str) -> Any:
    """Check ``value`` is in the canonicalisable subset and order object members per JCS."""
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            _check_string(value, path)
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise FormatError(f"{path}: integer outside ±(2^53-1)")
        return value
    if isinstance(value, float):
        raise FormatError(f"{path}: floats are not allowed (use an integer or a decimal string)")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for name in sorted(value, key=lambda k: _utf16_key(k) if isinstance(k, str) else b""):
            if not isinstance(name, str):
                raise FormatError(f"{path}: object member names must be strings")
            _check_string(name, path)
            out[name] = _normalise(value[name], _member_path(path, value, name))
        return out
    if isinstance(value, list | tuple):
        return [_normalise(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise FormatError(f"{path}: unsupported JSON type {type(value).__name__}")


def _member_path(path: str, obj: Mapping[str, Any], name: str) -> str:
    """``path.name``, the name in the safe form of :mod:`audit_ledger.core.text` (an error
    message must not echo a client's member name)."""
    if _SAFE_NAME.match(name):
        return f"{path}.{name}"
    position = next(i for i, key in enumerate(obj, start=1) if key == name)
    return f"{path}.{shown_name(name, position)}"


def _check_string(text: str, path: str) -> None:
    # A lone surrogate cannot be encoded as UTF-8, and RFC 8785 requires valid Unicode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{path}: string is not valid Unicode (lone surrogate)") from None


def _needs_utf16_order(value: Any, path: str) -> bool:
    """Validate ``value`` without copying it; True if some member name could sort differently
    in UTF-16 order than in code-point order (a character at or above U+E000)."""
    if value is None or isinstance(value, bool | str):
        return False
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise FormatError(f"{path}: integer outside ±(2^53-1)")
        return False
    if isinstance(value, float):
        raise FormatError(f"{path}: floats are not allowed (use an integer or a decimal string)")
    if isinstance(value, Mapping):
        special = False
        for name, item in value.items():
            if not isinstance(name, str):
                raise FormatError(f"{path}: object member names must be strings")
            if name and max(name) >= "\ue000":
                special = True
            special = _needs_utf16_order(item, _member_path(path, value, name)) or special
        return special
    if isinstance(value, list | tuple):
        special = False
        for i, item in enumerate(value):
            special = _needs_utf16_order(item, f"{path}[{i}]") or special
        return special
    raise FormatError(f"{path}: unsupported JSON type {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value`` (floats refused)."""
    if _needs_utf16_order(value, "$"):
        text = _encoder.encode(_normalise(value, "$"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError("$: string is not valid Unicode (lone surrogate)") from None
    # Code-point order equals UTF-16 order here, so sorting by code point is exact.
    return _sorted_compact(value)


def _sorted_compact(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        if "surrogates" in str(exc):
            raise FormatError("$: string is not valid Unicode (lone surrogate)") from None
        # A Mapping or sequence type orjson does not know (already validated): the stdlib
        # encoder writes the same bytes for it.
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError("$: string is not valid Unicode (lone surrogate)") from None


def canonical_plain(value: Any, max_depth: int) -> bytes | None:
    """Canonical bytes of a value made only of ``dict``, ``list``, ``str``, ``int`` in range,
    ``bool`` and ``None`` nested at most ``max_depth`` levels (the value itself is level 1),
    whose output is ASCII; ``None`` for anything else.

    The common case of :func:`canonical_json` at a fraction of its cost: exact type checks
    instead of ABC ones, no JSON paths, and ASCII output proves every member name is ASCII, so
    code-point order is UTF-16 order. ``None`` sends the caller to the general path, which
    gives the precise error (or handles the value).
    """
    if not _plain(value, 1, max_depth):
        return None
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None  # a lone surrogate: the general path words the error
    return out if out.isascii() else None


def _plain(value: Any, depth: int, max_depth: int) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if depth > max_depth:
        return False
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                return False
            kind = type(item)
            if kind is str or item is None:
                continue
            if not _plain(item, depth + 1, max_depth):
                return False
        return True
    if kind is list:
        return all(_plain(item, depth + 1, max_depth) for item in value)
    return False


def canonical_json_ascii_keys(value: Mapping[str, Any]) -> bytes:
    """Fast path for values already known to be in the subset with ASCII-only member names.

    With ASCII names, code-point order equals UTF-16 order, so ``sort_keys`` is exact. Callers
    (the leaf header) validate their members themselves.
    """
    return _sorted_compact(value)


def _reject_float(text: str) -> Any:
    raise FormatError("floats are not allowed")


def _reject_constant(text: str) -> Any:
    raise FormatError(f"{text} is not valid JSON")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for position, (name, value) in enumerate(pairs, start=1):
        if name in obj:
            # Named in the safe form (core.text): never the submitted name at any length.
            raise FormatError(f"duplicate object member {shown_name(name, position)}")
        obj[name] = value
    return obj


def _unique_members_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        return _unique_members(pairs)  # names the first repeated member
    return obj


_strict_decoder = json.JSONDecoder(
    parse_float=_reject_float,
    parse_constant=_reject_constant,
    object_pairs_hook=_unique_members_hook,
)


def _strings_unless_float(value: Any) -> int:
    """Number of JSON strings (member names and string values) in a parsed value, or -1 if it
    holds a float."""
    kind = type(value)
    if kind is str:
        return 1
    if kind is float:
        return -1
    if kind is dict:
        count = len(value)
        for item in value.values():
            inner = 1 if type(item) is str else _strings_unless_float(item)
            if inner < 0:
                return -1
            count += inner
        return count
    if kind is list:
        count = 0
        for item in value:
            inner = _strings_unless_float(item)
            if inner < 0:
                return -1
            count += inner
        return count
    return 0


def strict_loads(data: bytes | str) -> Any:
    """Parse JSON strictly: no floats, no NaN/Infinity, no duplicate member names.

    Raises :class:`FormatError` for anything that is not such JSON, never ``ValueError``.
    """
    try:
        # Decode bytes as UTF-8 ourselves: json.loads(bytes) would also accept UTF-16/32 and a BOM.
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"invalid JSON: {exc.__class__.__name__}") from None
    # Fast path: orjson parses several times faster than the stdlib, but silently keeps the
    # last of repeated member names and accepts floats. Without a backslash in the text every
    # '"' delimits a string, so the text holds exactly count('"') / 2 strings, and a repeated
    # name collapses in parsing and leaves fewer in the result. Anything else (a float, an
    # escape, a parse error) goes to the stdlib parser, which decides and words errors.
    if "\\" not in text:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        else:
            if 2 * _strings_unless_float(value) == text.count('"'):
                return value
    try:
        return _strict_decoder.decode(text)
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"invalid JSON: {exc.__class__.__name__}") from None
