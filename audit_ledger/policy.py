"""The event category policy (DESIGN §2) as data: required fields, retention, readers, key scope.

The built-in policy lives in ``default_policy.toml`` next to this module. :func:`load_policy`
reads it and, when given a file, lays that file over it: **each category the file names replaces
the built-in category of that name entirely** (so a file must spell out every required key of a
category it touches — no half-merged categories whose meaning depends on the defaults), categories
it does not name keep their defaults, and new names add categories. Categories cannot be removed.

Every problem in a policy file is a :class:`~audit_ledger.errors.ConfigError` naming the file, the
key (``categories.data_privacy_events.retention``) and the problem. Unknown keys are errors too:
a typo such as ``reader = [...]`` must not silently leave a category without its readers.
"""

from __future__ import annotations

import calendar
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, NoReturn

from audit_ledger.errors import ConfigError, ValidationError
from audit_ledger.roles import (
    ADMIN,
    AUDITOR,
    COMPLIANCE_OFFICER,
    PLAINTEXT_READER_ROLES,
    PRIVACY_OFFICER,
    ROLES,
    SECURITY_TEAM,
    WRITER,
    Role,
)

__all__ = [
    "ADMIN",
    "AUDITOR",
    "COMPLIANCE_OFFICER",
    "DEFAULT_POLICY_RESOURCE",
    "LEDGER_OPERATIONS",
    "PLAINTEXT_READER_ROLES",
    "PRIVACY_OFFICER",
    "ROLES",
    "SECURITY_TEAM",
    "WRITER",
    "CategoryPolicy",
    "KeyScope",
    "Policy",
    "Retention",
    "Role",
    "load_policy",
]

#: The system category the service writes its own operations to (DESIGN §2).
LEDGER_OPERATIONS: Final = "ledger_operations"
#: File name of the built-in policy inside the ``audit_ledger`` package.
DEFAULT_POLICY_RESOURCE: Final = "default_policy.toml"

KeyScope = Literal["period", "subject"]
_KEY_SCOPES: Final[tuple[KeyScope, ...]] = ("period", "subject")

_CATEGORY_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_REF_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
# "7y", "30d": a positive count without leading zeros. Bounds keep dates inside datetime's range.
_RETENTION: Final = re.compile(r"([1-9][0-9]*)([yd])")
_MAX_YEARS: Final = 1000
_MAX_DAYS: Final = _MAX_YEARS * 366

_TOP_LEVEL_KEYS: Final = frozenset({"version", "categories"})
_REQUIRED_KEYS: Final = ("required", "retention", "readers", "key_scope")
_OPTIONAL_KEYS: Final = (
    "money",
    "refs",
    "subject_field",
    "erasable",
    "system",
    "non_negative",
    "refund_event_types",
    "max_future_skew",
    "max_age",
)
#: "5m", "30s", "400d": a duration for the occurred_at rules (seconds, minutes, hours, days).
_DURATION: Final = re.compile(r"(0|[1-9][0-9]{0,6})([smhd])")
_DURATION_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVENT_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
#: How far ``occurred_at`` may run ahead of ``recorded_at`` when a category does not say
#: (clocks of the bot and the ledger differ a little; 9999-12-31 is no clock difference).
DEFAULT_MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
_CATEGORY_KEYS: Final = frozenset(_REQUIRED_KEYS + _OPTIONAL_KEYS)
_POLICY_VERSION: Final = 1


class _RetentionSyntaxError(Exception):
    """Internal: a retention string is malformed (turned into ``ConfigError`` with context)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a category's payloads are kept after ``recorded_at``.

    ``unit`` is ``"permanent"`` (``count`` 0), ``"y"`` (calendar years) or ``"d"`` (days of
    24 hours). Purging a payload never touches leaf bytes (DESIGN §3), so this only governs
    payload rows and data keys.
    """

    unit: Literal["permanent", "y", "d"]
    count: int = 0

    @classmethod
    def parse(cls, text: str) -> Retention:
        """Parse ``"permanent"``, ``"<N>y"`` or ``"<N>d"``.

        Raises:
            ConfigError: the text is none of those (the message quotes it: policy files are not
                secret).
        """
        try:
            return cls._parse(text)
        except _RetentionSyntaxError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def _parse(cls, text: str) -> Retention:
        if text == "permanent":
            return cls("permanent")
        match = _RETENTION.fullmatch(text)
        if match is None:
            raise _RetentionSyntaxError(f"{text!r} is not 'permanent', '<N>y' or '<N>d'")
        count = int(match.group(1))
        unit: Literal["y", "d"] = "y" if match.group(2) == "y" else "d"
        limit = _MAX_YEARS if unit == "y" else _MAX_DAYS
        if count > limit:
            raise _RetentionSyntaxError(f"{text!r} is longer than {limit}{unit}")
        return cls(unit, count)

    @property
    def permanent(self) -> bool:
        """True when payloads are never purged."""
        return self.unit == "permanent"

    def expires_at(self, recorded_at: datetime) -> datetime | None:
        """When a payload recorded at ``recorded_at`` becomes due for purging; None = never.

        Years are calendar years on the date, keeping the time of day: 2024-02-29 plus one year
        is 2025-02-28 (the last day of February), never March 1st.
        """
        if self.unit == "permanent":
            return None
        try:
            if self.unit == "d":
                return recorded_at + timedelta(days=self.count)
            year = recorded_at.year + self.count
            day = min(recorded_at.day, calendar.monthrange(year, recorded_at.month)[1])
            return recorded_at.replace(year=year, day=day)
        except (OverflowError, ValueError):
            # Past year 9999: no representable "now" can reach it, so it never expires.
            return None

    def is_expired(self, recorded_at: datetime, now: datetime) -> bool:
        """True once ``now`` has reached :meth:`expires_at` (never for permanent retention)."""
        expires = self.expires_at(recorded_at)
        return expires is not None and now >= expires

    def __str__(self) -> str:
        return "permanent" if self.unit == "permanent" else f"{self.count}{self.unit}"


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    """The rules of one event category."""

    name: str
    #: Data fields every event of this category must carry (envelope members excluded).
    required: tuple[str, ...]
    retention: Retention
    #: Roles that may read this category's data in plaintext.
    readers: frozenset[str]
    key_scope: KeyScope
    #: Data fields holding money (integer IDR or decimal string, never a float).
    money: tuple[str, ...] = ()
    #: Header ref name → data field whose blind index is stored under that name.
    refs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Data field naming the subject whose key encrypts the payload (``key_scope == "subject"``).
    subject_field: str | None = None
    #: Whether a subject's data may be erased (crypto-shredded) on request.
    erasable: bool = False
    #: Written only by the service itself; appends by writers are refused.
    system: bool = False
    #: Money fields that must not be negative, except in events of ``refund_event_types``.
    non_negative: tuple[str, ...] = ()
    #: Event types (e.g. ``refund``) whose ``non_negative`` fields may be negative.
    refund_event_types: frozenset[str] = frozenset()
    #: ``occurred_at`` may be at most this much later than ``recorded_at``.
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW
    #: ``occurred_at`` may be at most this much earlier than ``recorded_at`` (None: any age).
    max_age: timedelta | None = None

    def is_readable_by(self, roles: Iterable[str]) -> bool:
        """True if any of ``roles`` may read this category in plaintext."""
        return not self.readers.isdisjoint(roles)

    def missing_fields(self, data: Mapping[str, object]) -> list[str]:
        """The required fields absent from ``data``, in policy order."""
        return [name for name in self.required if name not in data]


@dataclass(frozen=True, slots=True)
class Policy:
    """All categories. Look categories up with :meth:`category`."""

    categories: Mapping[str, CategoryPolicy]
    #: Where the policy came from (built-in resource and/or a file), for logs and errors.
    source: str = "built-in"

    def category(self, name: str) -> CategoryPolicy:
        """The policy of category ``name``.

        Raises:
            ValidationError: the category is unknown. The name is not echoed: it is submitted
                input.
        """
        try:
            return self.categories[name]
        except KeyError:
            raise ValidationError(
                "unknown category", fields=[{"field": "category", "problem": "unknown category"}]
            ) from None

    def names(self) -> tuple[str, ...]:
        """Category names, sorted."""
        return tuple(sorted(self.categories))

    def readable_categories(self, roles: Iterable[str]) -> set[str]:
        """Categories whose data any of ``roles`` may read in plaintext."""
        held = frozenset(roles)
        return {name for name, cat in self.categories.items() if cat.is_readable_by(held)}

    def visible_categories(self, roles: Iterable[str]) -> set[str]:
        """Categories whose headers any of ``roles`` may see: readers' own, all for an auditor."""
        held = frozenset(roles)
        if AUDITOR in held:
            return set(self.categories)
        return self.readable_categories(held)

    def writable_categories(self) -> set[str]:
        """Categories a writer may append to (every non-system category)."""
        return {name for name, cat in self.categories.items() if not cat.system}


# --- loading -------------------------------------------------------------------------------


def load_policy(path: Path | None = None) -> Policy:
    """Load the built-in policy, with the categories of the file at ``path`` laid over it.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or breaks a rule. The message names
            the file, the key and the problem.
    """
    builtin_source = f"built-in {DEFAULT_POLICY_RESOURCE}"
    text = resources.files("audit_ledger").joinpath(DEFAULT_POLICY_RESOURCE).read_text("utf-8")
    categories = _parse(text, builtin_source)
    source = builtin_source
    if path is not None:
        source = str(path)
        categories |= _parse(_read_file(path), source)
    _check_whole(categories, source)
    return Policy(categories=MappingProxyType(categories), source=source)


def _read_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: policy file is not UTF-8 text") from None


def _parse(text: str, source: str) -> dict[str, CategoryPolicy]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message carries "(at line L, column C)".
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return _Reader(source).document(doc)


def _check_whole(categories: Mapping[str, CategoryPolicy], source: str) -> None:
    """Rules across categories: exactly one system category, and it is ``ledger_operations``."""
    ops = categories.get(LEDGER_OPERATIONS)
    if ops is None or not ops.system:
        _fail(source, f"categories.{LEDGER_OPERATIONS}.system", "must be true")
    for name, cat in categories.items():
        if cat.system and name != LEDGER_OPERATIONS:
            _fail(
                source,
                f"categories.{name}.system",
                f"only {LEDGER_OPERATIONS} is written by the service itself",
            )


def _fail(source: str, key: str, problem: str) -> NoReturn:
    raise ConfigError(f"{source}: {key}: {problem}")


class _Reader:
    """Validates one parsed TOML document; every failure names ``source`` and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        _fail(self.source, key, problem)

    def document(self, doc: Mapping[str, object]) -> dict[str, CategoryPolicy]:
        for key in sorted(doc.keys() - _TOP_LEVEL_KEYS):
            self.fail(key, "unknown key (expected 'version' or 'categories')")
        if "version" in doc:
            version = doc["version"]
            if type(version) is not int or version != _POLICY_VERSION:
                self.fail("version", f"unsupported policy version (expected {_POLICY_VERSION})")
        tables = doc.get("categories", {})
        if not isinstance(tables, dict):
            self.fail("categories", "must be a table of categories")
        result: dict[str, CategoryPolicy] = {}
        for name, table in tables.items():
            key = f"categories.{name}"
            if not _CATEGORY_NAME.fullmatch(name):
                self.fail(key, "category names are lower-case letters, digits and '_'")
            if not isinstance(table, dict):
                self.fail(key, "must be a table")
            result[name] = self.category(name, table, key)
        return result

    def category(self, name: str, table: Mapping[str, object], key: str) -> CategoryPolicy:
        for unknown in sorted(table.keys() - _CATEGORY_KEYS):
            self.fail(f"{key}.{unknown}", "unknown key")
        for needed in _REQUIRED_KEYS:
            if needed not in table:
                self.fail(
                    f"{key}.{needed}",
                    "missing (a category in a policy file replaces the built-in one entirely)",
                )

        required = self.names(table["required"], f"{key}.required", _FIELD_NAME, "field")
        money = self.names(table.get("money", []), f"{key}.money", _FIELD_NAME, "field")
        for name_ in money:
            if name_ not in required:
                self.fail(f"{key}.money", f"{name_!r} is not one of the required fields")

        refs = self.refs(table.get("refs", {}), f"{key}.refs", required)
        retention = self.retention(table["retention"], f"{key}.retention")
        readers = self.readers(table["readers"], f"{key}.readers")

        key_scope = table["key_scope"]
        if key_scope not in _KEY_SCOPES:
            self.fail(f"{key}.key_scope", "must be 'period' or 'subject'")
        scope: KeyScope = "subject" if key_scope == "subject" else "period"

        subject_field = table.get("subject_field")
        if scope == "subject":
            if not isinstance(subject_field, str):
                self.fail(f"{key}.subject_field", "required (a string) when key_scope = 'subject'")
            if subject_field not in required:
                self.fail(
                    f"{key}.subject_field", f"{subject_field!r} is not one of the required fields"
                )
        elif subject_field is not None:
            self.fail(f"{key}.subject_field", "only allowed when key_scope = 'subject'")

        erasable = self.boolean(table.get("erasable", False), f"{key}.erasable")
        if erasable and scope != "subject":
            # Erasure destroys the subject's data key; period keys are shared by many subjects.
            self.fail(f"{key}.erasable", "erasure needs key_scope = 'subject'")
        system = self.boolean(table.get("system", False), f"{key}.system")
        non_negative = self.names(
            table.get("non_negative", []), f"{key}.non_negative", _FIELD_NAME, "field"
        )
        for name_ in non_negative:
            if name_ not in money:
                self.fail(f"{key}.non_negative", f"{name_!r} is not one of the money fields")
        refunds = self.names(
            table.get("refund_event_types", []),
            f"{key}.refund_event_types",
            _EVENT_TYPE,
            "event type",
        )
        skew = self.duration(table.get("max_future_skew", "5m"), f"{key}.max_future_skew")
        max_age = table.get("max_age")

        return CategoryPolicy(
            name=name,
            required=required,
            retention=retention,
            readers=readers,
            key_scope=scope,
            money=money,
            refs=MappingProxyType(refs),
            subject_field=subject_field if scope == "subject" else None,
            erasable=erasable,
            system=system,
            non_negative=non_negative,
            refund_event_types=frozenset(refunds),
            max_future_skew=skew,
            max_age=None if max_age is None else self.duration(max_age, f"{key}.max_age"),
        )

    def duration(self, value: object, key: str) -> timedelta:
        match = _DURATION.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            self.fail(key, "must be a duration: '<N>s', '<N>m', '<N>h' or '<N>d'")
        span = timedelta(seconds=int(match.group(1)) * _DURATION_UNIT[match.group(2)])
        if span > timedelta(days=_MAX_DAYS):  # keeps "now - max_age" inside datetime's range
            self.fail(key, f"is longer than {_MAX_DAYS}d")
        return span

    def names(
        self, value: object, key: str, pattern: re.Pattern[str], what: str
    ) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(key, f"must be a list of {what} names")
        seen: list[str] = []
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                self.fail(key, f"{item!r} is not a valid {what} name")
            if item in seen:
                self.fail(key, f"{item!r} is listed twice")
            seen.append(item)
        return tuple(seen)

    def refs(self, value: object, key: str, required: tuple[str, ...]) -> dict[str, str]:
        if not isinstance(value, dict):
            self.fail(key, "must be a table of ref name = data field")
        refs: dict[str, str] = {}
        for ref_name, data_field in value.items():
            if not _REF_NAME.fullmatch(ref_name):
                self.fail(f"{key}.{ref_name}", "ref names are lower-case letters, digits and '_'")
            if not isinstance(data_field, str) or data_field not in required:
                self.fail(f"{key}.{ref_name}", f"{data_field!r} is not one of the required fields")
            refs[ref_name] = data_field
        return refs

    def retention(self, value: object, key: str) -> Retention:
        if not isinstance(value, str):
            self.fail(key, "must be a string: 'permanent', '<N>y' or '<N>d'")
        try:
            return Retention.parse(value)
        except ConfigError as exc:
            self.fail(key, str(exc))

    def readers(self, value: object, key: str) -> frozenset[str]:
        if not isinstance(value, list) or not value:
            self.fail(key, "must be a non-empty list of roles")
        for role in value:
            if not isinstance(role, str) or role not in ROLES:
                self.fail(key, f"unknown role {role!r} (roles: {', '.join(sorted(ROLES))})")
            if role not in PLAINTEXT_READER_ROLES:
                self.fail(key, f"role {role!r} may never read plaintext")
        return frozenset(value)

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value
