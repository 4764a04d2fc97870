"""Category policy: built-in defaults equal DESIGN §2, retention arithmetic, bad policy files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit_ledger.errors import ConfigError, ValidationError
from audit_ledger.policy import (
    LEDGER_OPERATIONS,
    CategoryPolicy,
    Retention,
    load_policy,
)
from audit_ledger.roles import PLAINTEXT_READER_ROLES, ROLES, Role

# DESIGN §2, transcribed: category -> (required data fields, retention, readers, key scope).
DESIGN_TABLE = {
    "financial_transactions": (
        {"user_id", "amount", "payment_method", "timestamp", "order_id"},
        "permanent",
        {"compliance_officer"},
        "period",
    ),
    "data_privacy_events": (
        {"user_id", "data_type", "action", "consent_status"},
        "7y",
        {"privacy_officer"},
        "subject",
    ),
    "security_events": (
        {"event_type", "source_ip", "user_id", "outcome"},
        "5y",
        {"security_team"},
        "period",
    ),
    "ledger_operations": (set(), "permanent", {"security_team"}, "period"),
}
# Plan fields that the envelope carries instead of `data` (DESIGN §2: timestamp is occurred_at).
ENVELOPE_CARRIED = {"timestamp", "event_type"}

FULL_PRIVACY = """
[categories.data_privacy_events]
required = ["user_id", "data_type", "action", "consent_status"]
refs = { user = "user_id" }
retention = "7y"
readers = ["privacy_officer"]
key_scope = "subject"
subject_field = "user_id"
erasable = true
"""


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def policy_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), "the message must name the file"
    return message


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


# --- built-in defaults ---------------------------------------------------------------------


def test_defaults_match_design_table() -> None:
    policy = load_policy(None)
    assert set(policy.categories) == set(DESIGN_TABLE)
    for name, (plan_fields, retention, readers, scope) in DESIGN_TABLE.items():
        cat = policy.category(name)
        assert cat.name == name
        assert set(cat.required) == plan_fields - ENVELOPE_CARRIED, name
        assert len(cat.required) == len(set(cat.required))
        assert str(cat.retention) == retention, name
        assert cat.readers == readers, name
        assert cat.key_scope == scope, name


def test_default_details() -> None:
    policy = load_policy()
    fin = policy.category("financial_transactions")
    assert fin.money == ("amount",)
    assert dict(fin.refs) == {"user": "user_id", "order": "order_id"}
    assert (fin.erasable, fin.system, fin.subject_field) == (False, False, None)

    priv = policy.category("data_privacy_events")
    assert dict(priv.refs) == {"user": "user_id"}
    assert (priv.erasable, priv.subject_field, priv.money) == (True, "user_id", ())

    sec = policy.category("security_events")
    assert dict(sec.refs) == {"user": "user_id"}
    assert (sec.erasable, sec.system) == (False, False)

    ops = policy.category(LEDGER_OPERATIONS)
    assert ops.system
    assert ops.required == ()
    assert not ops.erasable
    assert ops.retention.permanent


def test_only_data_privacy_events_is_erasable() -> None:
    policy = load_policy()
    assert {n for n, c in policy.categories.items() if c.erasable} == {"data_privacy_events"}


def test_default_source_names_the_builtin_file() -> None:
    assert load_policy().source == "built-in default_policy.toml"


def test_policy_is_read_only() -> None:
    policy = load_policy()
    with pytest.raises(TypeError):
        policy.categories["x"] = policy.category("security_events")  # type: ignore[index]
    with pytest.raises(TypeError):
        policy.category("financial_transactions").refs["x"] = "y"  # type: ignore[index]


# --- lookups and roles ---------------------------------------------------------------------


def test_unknown_category_is_a_validation_error_without_echo() -> None:
    with pytest.raises(ValidationError) as info:
        load_policy().category("payments<script>")
    assert info.value.fields == [{"field": "category", "problem": "unknown category"}]
    assert "payments" not in str(info.value)


@pytest.mark.parametrize(
    ("roles", "readable"),
    [
        ({"compliance_officer"}, {"financial_transactions"}),
        ({"privacy_officer"}, {"data_privacy_events"}),
        ({"security_team"}, {"security_events", "ledger_operations"}),
        ({"auditor"}, set()),
        ({"writer"}, set()),
        ({"admin"}, set()),
        (set(), set()),
        (
            {"compliance_officer", "privacy_officer"},
            {"financial_transactions", "data_privacy_events"},
        ),
        ({Role.SECURITY_TEAM, Role.AUDITOR}, {"security_events", "ledger_operations"}),
    ],
)
def test_readable_categories(roles: set[str], readable: set[str]) -> None:
    assert load_policy().readable_categories(roles) == readable


def test_visible_categories() -> None:
    policy = load_policy()
    assert policy.visible_categories(["auditor"]) == set(DESIGN_TABLE)
    assert policy.visible_categories(["privacy_officer"]) == {"data_privacy_events"}
    assert policy.visible_categories(["writer", "admin"]) == set()


def test_writers_cannot_write_the_system_category() -> None:
    assert load_policy().writable_categories() == set(DESIGN_TABLE) - {LEDGER_OPERATIONS}


def test_roles_are_the_fixed_set() -> None:
    assert sorted(ROLES) == [
        "admin",
        "auditor",
        "compliance_officer",
        "privacy_officer",
        "security_team",
        "writer",
    ]
    assert sorted(PLAINTEXT_READER_ROLES) == [
        "compliance_officer",
        "privacy_officer",
        "security_team",
    ]
    assert str(Role.WRITER) == "writer"


def test_missing_fields() -> None:
    fin = load_policy().category("financial_transactions")
    assert fin.missing_fields({"user_id": 1, "amount": 5}) == ["payment_method", "order_id"]
    assert fin.missing_fields(dict.fromkeys(fin.required, "x")) == []


# --- retention -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "count"),
    [("permanent", "permanent", 0), ("7y", "y", 7), ("5y", "y", 5), ("30d", "d", 30)],
)
def test_retention_parse(text: str, unit: str, count: int) -> None:
    retention = Retention.parse(text)
    assert (retention.unit, retention.count) == (unit, count)
    assert str(retention) == text


@pytest.mark.parametrize(
    "text",
    ["7 years", "7_years", "7Y", "Permanent", "forever", "0y", "0d", "07y", "-1d", "1w", "", "y"],
)
def test_retention_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="is not 'permanent', '<N>y' or '<N>d'"):
        Retention.parse(text)


def test_retention_parse_rejects_absurd_lengths() -> None:
    with pytest.raises(ConfigError, match="longer than"):
        Retention.parse("1001y")
    assert Retention.parse("1000y").expires_at(utc(2026, 1, 1)) == utc(3026, 1, 1)


def test_five_years_boundaries() -> None:
    five = Retention.parse("5y")
    recorded = datetime(2026, 11, 28, 3, 55, 17, 123456, tzinfo=UTC)
    expires = five.expires_at(recorded)
    assert expires == datetime(2031, 11, 28, 3, 55, 17, 123456, tzinfo=UTC)

    four_years_364_days = Retention.parse("4y").expires_at(recorded)
    assert four_years_364_days is not None
    assert not five.is_expired(recorded, four_years_364_days + timedelta(days=364))
    assert not five.is_expired(recorded, expires - timedelta(microseconds=1))
    assert five.is_expired(recorded, expires)
    assert five.is_expired(recorded, expires + timedelta(days=1))


def test_seven_years_is_calendar_years_not_days() -> None:
    # 2024-01-01 + 7y spans two leap days (2024, 2028): 2557 days, not 7 * 365.
    expires = Retention.parse("7y").expires_at(utc(2024, 1, 1))
    assert expires == utc(2031, 1, 1)
    assert expires - utc(2024, 1, 1) == timedelta(days=2557)


@pytest.mark.parametrize(
    ("retention", "expected"),
    [
        ("1y", utc(2025, 2, 28, 12)),
        ("4y", utc(2028, 2, 29, 12)),
        ("5y", utc(2029, 2, 28, 12)),
        ("7y", utc(2031, 2, 28, 12)),
        ("1d", utc(2024, 3, 1, 12)),
        ("365d", utc(2025, 2, 28, 12)),
    ],
)
def test_leap_day(retention: str, expected: datetime) -> None:
    assert Retention.parse(retention).expires_at(utc(2024, 2, 29, 12)) == expected


def test_days_are_exact() -> None:
    recorded = datetime(2026, 11, 28, 3, 55, 17, tzinfo=UTC)
    assert Retention.parse("30d").expires_at(recorded) == recorded + timedelta(days=30)


def test_expiry_beyond_datetime_range_is_never() -> None:
    late = datetime(9990, 1, 1, tzinfo=UTC)
    assert Retention.parse("1000y").expires_at(late) is None
    assert Retention.parse("366000d").expires_at(late) is None
    assert not Retention.parse("1000y").is_expired(late, datetime.max.replace(tzinfo=UTC))


def test_permanent_never_expires() -> None:
    permanent = Retention.parse("permanent")
    assert permanent.permanent
    assert permanent.expires_at(utc(2000, 1, 1)) is None
    assert not permanent.is_expired(utc(2000, 1, 1), utc(9999, 12, 31))


# --- policy files: merging -----------------------------------------------------------------


def test_file_replaces_named_category_and_keeps_others(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_PRIVACY.replace('"7y"', '"10y"'))
    policy = load_policy(path)
    assert policy.source == str(path)
    assert str(policy.category("data_privacy_events").retention) == "10y"
    default = load_policy()
    for name in ("financial_transactions", "security_events", LEDGER_OPERATIONS):
        assert policy.category(name) == default.category(name)


def test_replacement_is_whole_not_merged(tmp_path: Path) -> None:
    # Omitting optional keys resets them to their own defaults, not to the built-in values.
    path = write(
        tmp_path,
        """
[categories.financial_transactions]
required = ["user_id", "amount", "payment_method", "order_id"]
retention = "permanent"
readers = ["compliance_officer"]
key_scope = "period"
""",
    )
    fin = load_policy(path).category("financial_transactions")
    assert fin.money == ()
    assert dict(fin.refs) == {}


def test_file_adds_a_category(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
version = 1
[categories.refund_events]
required = ["order_id", "amount"]
money = ["amount"]
refs = { order = "order_id" }
retention = "3650d"
readers = ["compliance_officer", "security_team"]
key_scope = "period"
""",
    )
    policy = load_policy(path)
    refunds = policy.category("refund_events")
    assert refunds == CategoryPolicy(
        name="refund_events",
        required=("order_id", "amount"),
        retention=Retention("d", 3650),
        readers=frozenset({"compliance_officer", "security_team"}),
        key_scope="period",
        money=("amount",),
        refs=refunds.refs,
    )
    assert dict(refunds.refs) == {"order": "order_id"}
    assert "refund_events" in policy.readable_categories(["security_team"])
    assert "refund_events" in policy.writable_categories()


def test_empty_file_keeps_defaults(tmp_path: Path) -> None:
    assert load_policy(write(tmp_path, "")).categories == load_policy().categories


# --- policy files: errors name file, key and problem --------------------------------------


def test_bad_retention(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_PRIVACY.replace('"7y"', '"7 years"'))
    assert policy_error(path) == (
        f"{path}: categories.data_privacy_events.retention: "
        "'7 years' is not 'permanent', '<N>y' or '<N>d'"
    )


def test_unknown_key_in_category(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_PRIVACY + 'reader = ["privacy_officer"]\n')
    assert policy_error(path) == f"{path}: categories.data_privacy_events.reader: unknown key"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[category.security_events]\nretention = '5y'\n")
    assert policy_error(path).startswith(f"{path}: category: unknown key")


def test_unknown_reader_role(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_PRIVACY.replace('["privacy_officer"]', '["dpo"]'))
    message = policy_error(path)
    assert message.startswith(f"{path}: categories.data_privacy_events.readers: unknown role 'dpo'")


@pytest.mark.parametrize("role", ["auditor", "writer", "admin"])
def test_roles_that_may_never_read_plaintext(tmp_path: Path, role: str) -> None:
    path = write(tmp_path, FULL_PRIVACY.replace('["privacy_officer"]', f'["{role}"]'))
    assert policy_error(path) == (
        f"{path}: categories.data_privacy_events.readers: role '{role}' may never read plaintext"
    )


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_PRIVACY.replace('retention = "7y"', "retention = 7y"))
    message = policy_error(path)
    assert "invalid TOML" in message
    assert "line 5" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert "cannot read policy file" in policy_error(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    assert "not UTF-8" in policy_error(path)


def test_partial_category_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[categories.data_privacy_events]\nretention = "10y"\n')
    message = policy_error(path)
    assert message.startswith(f"{path}: categories.data_privacy_events.required: missing")


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('key_scope = "subject"', 'key_scope = "user"', "key_scope", "must be 'period' or"),
        ('subject_field = "user_id"', "", "subject_field", "required (a string)"),
        (
            'subject_field = "user_id"',
            'subject_field = "email"',
            "subject_field",
            "'email' is not one of the required fields",
        ),
        ("erasable = true", 'erasable = "yes"', "erasable", "must be true or false"),
        ("erasable = true", "erasable = true\nsystem = true", "system", "only ledger_operations"),
        (
            'refs = { user = "user_id" }',
            'refs = { user = "usr_id" }',
            "refs.user",
            "'usr_id' is not one of the required fields",
        ),
        ('refs = { user = "user_id" }', 'refs = { User = "user_id" }', "refs.User", "lower-case"),
        ('refs = { user = "user_id" }', 'money = ["amount"]', "money", "'amount' is not one"),
        ('"consent_status"]', '"consent_status", "action"]', "required", "listed twice"),
        ('"consent_status"]', '"consent status"]', "required", "not a valid field name"),
        ('retention = "7y"', "retention = 7", "retention", "must be a string"),
        ('readers = ["privacy_officer"]', "readers = []", "readers", "non-empty list"),
    ],
)
def test_category_rules(tmp_path: Path, old: str, new: str, key: str, problem: str) -> None:
    assert old in FULL_PRIVACY
    path = write(tmp_path, FULL_PRIVACY.replace(old, new))
    message = policy_error(path)
    assert message.startswith(f"{path}: categories.data_privacy_events.{key}: "), message
    assert problem in message


def test_erasure_needs_subject_keys(tmp_path: Path) -> None:
    text = FULL_PRIVACY.replace('key_scope = "subject"', 'key_scope = "period"').replace(
        'subject_field = "user_id"', ""
    )
    message = policy_error(write(tmp_path, text))
    assert "categories.data_privacy_events.erasable: erasure needs key_scope = 'subject'" in message


def test_subject_field_only_with_subject_scope(tmp_path: Path) -> None:
    text = FULL_PRIVACY.replace('key_scope = "subject"', 'key_scope = "period"').replace(
        "erasable = true", "erasable = false"
    )
    message = policy_error(write(tmp_path, text))
    assert "categories.data_privacy_events.subject_field: only allowed when" in message


def test_ledger_operations_must_stay_system(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[categories.ledger_operations]
required = []
retention = "permanent"
readers = ["security_team"]
key_scope = "period"
""",
    )
    assert policy_error(path) == f"{path}: categories.ledger_operations.system: must be true"


def test_bad_category_name(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_PRIVACY.replace("data_privacy_events", "Data-Privacy"))
    assert "categories.Data-Privacy: category names are lower-case" in policy_error(path)


@pytest.mark.parametrize("version", ["2", "1.0", "true", '"1"'])
def test_unsupported_version(tmp_path: Path, version: str) -> None:
    message = policy_error(write(tmp_path, f"version = {version}\n"))
    assert "version: unsupported policy version" in message
