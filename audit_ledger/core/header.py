"""Ledger format v1 leaf header (DESIGN §3, normative).

A leaf is the RFC 8785 canonical JSON of the header, UTF-8 encoded. :meth:`LeafHeader.encode`
produces it; :func:`parse_leaf` accepts exactly the bytes ``encode`` would produce and nothing
else, so a re-encoding check is built into parsing.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import orjson

from audit_ledger.core.canonical import MAX_SAFE_INTEGER, canonical_json_ascii_keys
from audit_ledger.core.timestamps import is_canonical_timestamp
from audit_ledger.errors import FormatError

FORMAT_VERSION = 1
ZERO_HASH_HEX = "0" * 64

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
# Ref names are ASCII identifiers so that the fast JCS path (sort_keys) stays exact.
_REF_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
#: Header members the database also keeps as columns of ``entries``, for queries (besides
#: ``seq``); verification checks each against its leaf.
INDEXED_MEMBERS = (
    "event_id",
    "category",
    "event_type",
    "occurred_at",
    "recorded_at",
    "writer",
    "key_id",
)
#: A header's (or a header dict's) :data:`INDEXED_MEMBERS` values, in that order.
indexed_values = operator.itemgetter(*INDEXED_MEMBERS)


@dataclass(frozen=True, slots=True)
class LeafHeader:
    """One entry's committed header. All members are required in v1."""

    seq: int
    event_id: str
    category: str
    event_type: str
    occurred_at: str
    recorded_at: str
    writer: str
    correlation_id: str | None
    refs: Mapping[str, str] = field(default_factory=dict)
    key_id: str | None = None
    payload_sha256: str | None = None
    prev: str = ZERO_HASH_HEX
    v: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _validate({name: getattr(self, name) for name in _MEMBERS})

    def to_dict(self) -> dict[str, Any]:
        """The header as a plain JSON object (member order irrelevant; encode() sorts)."""
        return header_dict(
            seq=self.seq,
            event_id=self.event_id,
            category=self.category,
            event_type=self.event_type,
            occurred_at=self.occurred_at,
            recorded_at=self.recorded_at,
            writer=self.writer,
            correlation_id=self.correlation_id,
            refs=self.refs,
            key_id=self.key_id,
            payload_sha256=self.payload_sha256,
            prev=self.prev,
        )

    def encode(self) -> bytes:
        """Canonical leaf bytes (RFC 8785 JCS of :meth:`to_dict`)."""
        return canonical_json_ascii_keys(self.to_dict())


#: Every member of a v1 header (DESIGN §3), from :class:`LeafHeader` itself: the one list the
#: header, the columns, the queries and verification are derived from.
HEADER_MEMBERS = tuple(f.name for f in fields(LeafHeader))
_MEMBERS = frozenset(HEADER_MEMBERS)


def header_dict(
    *,
    seq: int,
    event_id: str,
    category: str,
    event_type: str,
    occurred_at: str,
    recorded_at: str,
    writer: str,
    correlation_id: str | None,
    refs: Mapping[str, str],
    key_id: str | None,
    payload_sha256: str | None,
    prev: str,
) -> dict[str, Any]:
    """The v1 header members as a JSON object — the one place that lists them."""
    return {
        "v": FORMAT_VERSION,
        "seq": seq,
        "event_id": event_id,
        "category": category,
        "event_type": event_type,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "writer": writer,
        "correlation_id": correlation_id,
        "refs": dict(refs),
        "key_id": key_id,
        "payload_sha256": payload_sha256,
        "prev": prev,
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(name: str, value: object, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str):
        raise FormatError(f"header.{name} must be a string{' or null' if nullable else ''}")
    if value.isascii():
        return  # the common case, and ASCII is always valid Unicode
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"header.{name} is not valid Unicode") from None


# Verification validates every header of the log, and a batch shares one recorded_at: the
# cache turns the second and later checks of a timestamp into a dictionary hit.
_canonical_timestamp = lru_cache(maxsize=4096)(is_canonical_timestamp)


def _validate(h: Mapping[str, Any]) -> None:
    """Check the members' types and forms (``h`` holds exactly the v1 members)."""
    # Runs for every entry verified, so each member is read once and the cheap test goes first.
    v, seq, prev = h["v"], h["seq"], h["prev"]
    if not _is_int(v) or v != FORMAT_VERSION:
        raise FormatError(f"header.v must be {FORMAT_VERSION}")
    if not _is_int(seq) or not 0 <= seq <= MAX_SAFE_INTEGER:
        raise FormatError("header.seq must be a non-negative integer below 2^53")
    event_id = h["event_id"]
    if not isinstance(event_id, str) or not _UUID.match(event_id):
        raise FormatError("header.event_id must be a lower-case hyphenated UUID")
    for name in ("category", "event_type", "writer"):
        text = h[name]
        _check_text(name, text)
        if not text:
            raise FormatError(f"header.{name} must not be empty")
    _check_text("correlation_id", h["correlation_id"], nullable=True)
    _check_text("key_id", h["key_id"], nullable=True)
    for name in ("occurred_at", "recorded_at"):
        moment = h[name]
        if not isinstance(moment, str) or not _canonical_timestamp(moment):
            raise FormatError(f"header.{name} must be RFC 3339 UTC with 6 fractional digits")
    refs = h["refs"]
    if not isinstance(refs, Mapping):
        raise FormatError("header.refs must be an object")
    for ref_name, ref_value in refs.items():
        if not isinstance(ref_name, str) or not _REF_NAME.match(ref_name):
            raise FormatError("header.refs names must match [a-z][a-z0-9_]{0,31}")
        if not isinstance(ref_value, str):
            raise FormatError("header.refs values must be strings")
        _check_text("refs", ref_value)
    digest = h["payload_sha256"]
    if digest is not None and (not isinstance(digest, str) or not _HEX64.match(digest)):
        raise FormatError("header.payload_sha256 must be 64 lower-case hex digits or null")
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise FormatError("header.prev must be 64 lower-case hex digits")
    if seq == 0 and prev != ZERO_HASH_HEX:
        raise FormatError("header.prev of seq 0 must be 64 zeros")


def _check_members(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise FormatError("leaf is not a JSON object")
    if obj.keys() != _MEMBERS:
        keys = set(obj)
        missing, extra = sorted(_MEMBERS - keys), sorted(keys - _MEMBERS, key=str)
        raise FormatError(f"header members wrong: missing {missing}, unknown {extra}")
    return obj


def header_from_dict(obj: object) -> LeafHeader:
    """Build a header from a parsed JSON object, rejecting unknown or missing members."""
    return LeafHeader(**_check_members(obj))


def check_leaf(leaf: bytes) -> dict[str, Any]:
    """Parse and check leaf bytes; return the header members as a plain dict.

    The same checks as :func:`parse_leaf` without building a :class:`LeafHeader`: verification
    runs this for every entry of the log, where the dataclass would cost as much as the rest.
    """
    if not isinstance(leaf, bytes | bytearray | memoryview):
        raise FormatError("leaf must be bytes")
    # Plain (C-speed) parsing is enough here: duplicate members, floats and any other
    # non-canonical form cannot survive the type checks and the re-encoding comparison below.
    # orjson rejects invalid UTF-8 (and lone surrogates) itself.
    try:
        obj = _check_members(orjson.loads(leaf))
    except orjson.JSONDecodeError:
        raise FormatError("leaf is not valid UTF-8 JSON") from None
    _validate(obj)
    if canonical_json_ascii_keys(obj) != leaf:
        raise FormatError("leaf bytes are not the canonical encoding of their header")
    return obj


def parse_leaf(leaf: bytes) -> LeafHeader:
    """Parse leaf bytes; they must be exactly the canonical encoding of a valid v1 header."""
    return LeafHeader(**check_leaf(leaf))
