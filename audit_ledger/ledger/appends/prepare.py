"""Validate and normalise an incoming event (the body of ``POST /v1/events``) against the policy.

Shape: ``{"event_id", "category", "event_type", "occurred_at", "correlation_id"?, "data"}``.
Errors name the failing fields and the rule, never the submitted values (they may be personal
data or secrets). Normalisation happens before hashing and before idempotency comparison:
``event_id`` lower-cased, ``occurred_at`` to UTC with 6 fractional digits (DESIGN §4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from audit_ledger.core.canonical import canonical_json, canonical_plain, strict_loads
from audit_ledger.core.text import find_unsafe_text, shown_name
from audit_ledger.core.timestamps import format_timestamp, normalise_timestamp
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.errors import FormatError, ValidationError
from audit_ledger.policy import CategoryPolicy, Policy

EVENT_MEMBERS = frozenset(
    {"event_id", "category", "event_type", "occurred_at", "correlation_id", "data"}
)
REQUIRED_MEMBERS = ("event_id", "category", "event_type", "occurred_at", "data")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
# Identifiers that end up in logs and metrics labels: no spaces or control characters.
_EVENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}\Z")
_CORRELATION = re.compile(r"[\x21-\x7e]{1,128}\Z")
_MONEY = re.compile(r"-?(0|[1-9][0-9]{0,29})(\.[0-9]{1,18})?\Z")
SUBJECT_REF = "subject"
#: Deepest nesting of objects/arrays accepted in ``data`` (``data`` itself is level 1). Audit
#: events are flat records; deeper values only exhaust recursion further down — past ~255
#: levels the API's response serialiser fails, so such an event could never be read back and
#: would break every page that contains it.
MAX_DATA_DEPTH = 32


@dataclass(slots=True)
class PreparedEvent:
    """A valid, normalised event, ready to be sealed and appended (treat as read-only: not
    frozen because a frozen dataclass is several times slower to build and unpickle, and
    thousands cross a pipe per second in a bulk import)."""

    event_id: str
    category: str
    event_type: str
    occurred_at: str
    correlation_id: str | None
    #: RFC 8785 bytes of ``data`` — the plaintext that gets sealed.
    data_bytes: bytes
    #: Header refs: ref name -> blind index.
    refs: Mapping[str, str]
    #: Blind index of the subject for ``subject``-scoped keys, else None.
    subject: str | None

    def __reduce__(self) -> tuple[type[PreparedEvent], tuple[Any, ...]]:
        # Plain constructor arguments unpickle faster than dataclass state.
        return PreparedEvent, (
            self.event_id,
            self.category,
            self.event_type,
            self.occurred_at,
            self.correlation_id,
            self.data_bytes,
            self.refs,
            self.subject,
        )

    def same_request(self, other: PreparedEvent) -> bool:
        """Idempotency comparison of two normalised requests."""
        return (
            self.category == other.category
            and self.event_type == other.event_type
            and self.occurred_at == other.occurred_at
            and self.correlation_id == other.correlation_id
            and self.data_bytes == other.data_bytes
        )


def _problem(fields: list[dict[str, str]], name: str, problem: str) -> None:
    fields.append({"field": name, "problem": problem})


def prepare_event(
    raw: object,
    policy: Policy,
    indexer: BlindIndexer,
    *,
    max_data_bytes: int,
    allow_system: bool = False,
    location: str = "",
    now: datetime | None = None,
) -> PreparedEvent:
    """Check ``raw`` against the envelope rules and the category policy; normalise it.

    ``location`` prefixes field names (``events[3].data.amount``) inside a batch. ``now`` is
    the time the policy's ``occurred_at`` rules are checked against (default: the wall clock,
    which ``recorded_at`` is taken from moments later).
    """
    fields: list[dict[str, str]] = []
    if not isinstance(raw, Mapping):
        where = location.rstrip(".") or "$"
        raise ValidationError(
            "event must be a JSON object", [{"field": where, "problem": "not an object"}]
        )
    if not raw.keys() <= EVENT_MEMBERS:
        # Named in the safe form (core.text): a client's member name is never echoed as is.
        for position, name in enumerate(raw, start=1):
            if name not in EVENT_MEMBERS:
                _problem(fields, f"{location}{shown_name(name, position)}", "unknown member")
    for name in REQUIRED_MEMBERS:
        if name not in raw or raw[name] is None:
            _problem(fields, f"{location}{name}", "required")

    event_id = raw.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not _UUID.match(event_id)):
        _problem(fields, f"{location}event_id", "must be a hyphenated UUID")
    event_type = raw.get("event_type")
    if event_type is not None and (
        not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type)
    ):
        _problem(fields, f"{location}event_type", "must match [A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
    correlation_id = raw.get("correlation_id")
    if correlation_id is not None and (
        not isinstance(correlation_id, str) or not _CORRELATION.match(correlation_id)
    ):
        _problem(fields, f"{location}correlation_id", "must be 1-128 printable ASCII characters")
    occurred_at: str | None = None
    if raw.get("occurred_at") is not None:
        try:
            occurred_at = normalise_timestamp(raw["occurred_at"])
        except FormatError:
            _problem(fields, f"{location}occurred_at", "must be an RFC 3339 timestamp with offset")

    category_policy: CategoryPolicy | None = None
    category = raw.get("category")
    if category is not None:
        if not isinstance(category, str) or category not in policy.categories:
            _problem(fields, f"{location}category", "unknown category")
        else:
            category_policy = policy.categories[category]
            if category_policy.system and not allow_system:
                _problem(fields, f"{location}category", "written only by the service itself")

    data = raw.get("data")
    data_bytes = b""
    if data is not None:
        # The common case, a record of plain values, is checked and encoded in one pass; the
        # general path below takes everything else and words the precise error.
        plain = canonical_plain(data, MAX_DATA_DEPTH) if type(data) is dict else None
        if plain is None and not isinstance(data, Mapping):
            _problem(fields, f"{location}data", "must be an object")
        elif plain is None and _deeper_than(data, MAX_DATA_DEPTH):
            _problem(fields, f"{location}data", f"nested deeper than {MAX_DATA_DEPTH} levels")
        else:
            if plain is not None:
                data_bytes = plain
            else:
                try:
                    data_bytes = canonical_json(data)
                except FormatError as exc:
                    # The message names a JSON path and the rule, never the value.
                    _problem(fields, f"{location}data", str(exc).replace("$", "data", 1))
            if b"\\u0000" in data_bytes:  # RFC 8785 writes a NUL as this escape, only it
                found = find_unsafe_text(data, f"{location}data")
                if found is not None:
                    _problem(fields, *found)
            if len(data_bytes) > max_data_bytes:
                _problem(fields, f"{location}data", f"larger than {max_data_bytes} bytes")
            if category_policy is not None:
                _check_data(category_policy, cast(Mapping[str, Any], data), fields, location)
                if isinstance(event_type, str):
                    _check_amounts(category_policy, event_type, data, fields, location)
    if category_policy is not None and occurred_at is not None:
        _check_occurred_at(category_policy, occurred_at, now, fields, location)

    if fields:
        raise ValidationError("event is invalid", fields)
    # Every member was checked above; an empty ``fields`` means all of them are well-typed.
    event_id, category, event_type = cast(str, event_id), cast(str, category), cast(str, event_type)
    category_policy, data = cast(CategoryPolicy, category_policy), cast(Mapping[str, Any], data)
    refs = {name: indexer.index(name, data[f]) for name, f in category_policy.refs.items()}
    subject = None
    if category_policy.key_scope == "subject" and category_policy.subject_field:
        subject = indexer.index(SUBJECT_REF, data[category_policy.subject_field])
    return PreparedEvent(
        event_id=event_id.lower(),
        category=category,
        event_type=event_type,
        occurred_at=cast(str, occurred_at),
        correlation_id=correlation_id,
        data_bytes=data_bytes,
        refs=refs,
        subject=subject,
    )


@dataclass(frozen=True, slots=True)
class PreparedLines:
    """Numbered JSON lines validated in order, up to the first bad one."""

    events: list[PreparedEvent]
    #: line number of each event
    numbers: list[int]
    #: the first bad line and what is wrong with it (never its content), if any
    bad_line: int | None = None
    problem: str | None = None


def describe(exc: FormatError | ValidationError) -> str:
    """One line naming the failing fields and rules (never the submitted values)."""
    if isinstance(exc, ValidationError) and exc.fields:
        return "; ".join(f"{f['field']}: {f['problem']}" for f in exc.fields)
    return str(exc)


def prepare_lines(
    lines: Sequence[tuple[int, str]],
    policy: Policy,
    indexer: BlindIndexer,
    *,
    max_data_bytes: int,
    now: datetime | None = None,
) -> PreparedLines:
    """Parse (strict JSON: no floats, no duplicate members) and validate numbered lines, each
    the body of ``POST /v1/events``; stop at the first bad one. The bulk-import unit of work,
    run in worker processes for large imports."""
    events: list[PreparedEvent] = []
    numbers: list[int] = []
    # One clock reading for the chunk (validated within a fraction of a second; the policy's
    # bounds are minutes to years wide), so its bounds are formatted once, not per line.
    now = now if now is not None else datetime.now(UTC)
    for number, line in lines:
        try:
            events.append(
                prepare_event(
                    strict_loads(line), policy, indexer, max_data_bytes=max_data_bytes, now=now
                )
            )
        except (FormatError, ValidationError) as exc:
            return PreparedLines(events, numbers, number, describe(exc))
        numbers.append(number)
    return PreparedLines(events, numbers)


def _deeper_than(value: object, limit: int) -> bool:
    """Whether objects/arrays in ``value`` nest more than ``limit`` levels (iteratively)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_data(
    policy: CategoryPolicy, data: Mapping[str, Any], fields: list[dict[str, str]], location: str
) -> None:
    for name in policy.required:
        if data.get(name) is None:
            _problem(fields, f"{location}data.{name}", "required")
    for name in policy.money:
        value = data.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | str)
            or (isinstance(value, str) and not _MONEY.match(value))
        ):
            _problem(
                fields, f"{location}data.{name}", "money must be an integer or a decimal string"
            )
    ref_fields = set(policy.refs.values())
    if policy.subject_field:
        ref_fields.add(policy.subject_field)
    for name in sorted(ref_fields):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            _problem(fields, f"{location}data.{name}", "must be a non-empty string or an integer")


def _check_amounts(
    policy: CategoryPolicy,
    event_type: str,
    data: Mapping[str, Any],
    fields: list[dict[str, str]],
    location: str,
) -> None:
    """The policy's ``non_negative`` money fields (DESIGN §2 money: integer or decimal string):
    negative only in its refund event types (issue #12 item 5)."""
    if event_type in policy.refund_event_types:
        return
    for name in policy.non_negative:
        value = data.get(name)
        negative = (type(value) is int and value < 0) or (
            isinstance(value, str)
            and _MONEY.match(value) is not None
            and value.startswith("-")
            and value.strip("-0.") != ""  # "-0.00" is zero
        )
        if negative:
            refunds = ", ".join(sorted(policy.refund_event_types)) or "none"
            _problem(
                fields,
                f"{location}data.{name}",
                f"must not be negative (except in refund event types: {refunds})",
            )


def _check_occurred_at(
    policy: CategoryPolicy,
    occurred_at: str,
    now: datetime | None,
    fields: list[dict[str, str]],
    location: str,
) -> None:
    """``occurred_at`` no later than ``recorded_at`` plus the policy's skew, and (if the policy
    sets ``max_age``) not older than that (issue #12 item 5)."""
    latest, earliest = _occurred_bounds(
        policy.max_future_skew, policy.max_age, now if now is not None else datetime.now(UTC)
    )
    # Canonical timestamps (fixed width, UTC) compare as the instants they name: two string
    # comparisons per event instead of parsing each one back into a datetime.
    if latest is not None and occurred_at > latest:
        _problem(
            fields,
            f"{location}occurred_at",
            f"must not be later than recorded_at plus {_duration(policy.max_future_skew)}",
        )
    elif policy.max_age is not None and earliest is not None and occurred_at < earliest:
        _problem(
            fields,
            f"{location}occurred_at",
            f"must not be more than {_duration(policy.max_age)} before recorded_at",
        )


@lru_cache(maxsize=16)  # a bulk import checks a whole chunk of lines against one ``now``
def _occurred_bounds(
    skew: timedelta, max_age: timedelta | None, now: datetime
) -> tuple[str | None, str | None]:
    """The latest and earliest accepted ``occurred_at``, canonical; None where the bound
    falls outside the years a timestamp can name (nothing lies beyond it)."""
    if now.utcoffset() is None:  # a programming error: never let it pass as "no bound"
        raise ValueError("now must be an aware datetime")
    try:
        latest: str | None = format_timestamp(now + skew)
    except (OverflowError, FormatError):
        latest = None
    earliest = None
    if max_age is not None:
        try:
            earliest = format_timestamp(now - max_age)
        except (OverflowError, FormatError):
            earliest = None
    return latest, earliest


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
