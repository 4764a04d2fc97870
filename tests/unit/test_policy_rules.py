"""Validation rules per category in the policy (issue #12 item 5): parsing and the rules as the
append pipeline applies them (``prepare_event``, which HTTP, batches and bulk imports share)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import ConfigError, ValidationError
from audit_ledger.ledger.appends.prepare import _check_occurred_at, prepare_event
from audit_ledger.policy import DEFAULT_MAX_FUTURE_SKEW, Policy, load_policy
from tests.support.factories import event

NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
INDEXER = BlindIndexer(Secret(b"k" * 32))


def _prepare(raw: dict[str, Any], policy: Policy | None = None, now: datetime = NOW) -> Any:
    return prepare_event(raw, policy or load_policy(), INDEXER, max_data_bytes=65536, now=now)


def _problems(
    raw: dict[str, Any], policy: Policy | None = None, now: datetime = NOW
) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        _prepare(raw, policy, now)
    return {f["field"]: f["problem"] for f in caught.value.fields}


def _payment(amount: Any, event_type: str = "payment_completed") -> dict[str, Any]:
    raw = event("financial_transactions", amount=amount)
    raw["event_type"] = event_type
    return raw


def test_built_in_rules() -> None:
    financial = load_policy().category("financial_transactions")
    assert financial.non_negative == ("amount",)
    assert financial.refund_event_types == {"refund", "payment_refunded"}
    assert financial.max_future_skew == DEFAULT_MAX_FUTURE_SKEW == timedelta(minutes=5)
    assert financial.max_age is None
    assert load_policy().category("security_events").max_future_skew == timedelta(minutes=5)


@pytest.mark.parametrize("amount", [-1, "-0.01", "-150000.00", -(2**53 - 1)])
def test_negative_amount_is_refused_naming_the_field(amount: Any) -> None:
    problems = _problems(_payment(amount))
    assert list(problems) == ["data.amount"]
    assert "must not be negative" in problems["data.amount"]
    assert "refund" in problems["data.amount"]


@pytest.mark.parametrize("event_type", ["refund", "payment_refunded"])
def test_refund_types_may_be_negative(event_type: str) -> None:
    assert _prepare(_payment("-150000.00", event_type)).event_type == event_type


@pytest.mark.parametrize("amount", [0, "0", "-0", "-0.00", "0.00", 150000, "1.5"])
def test_zero_and_positive_amounts_pass(amount: Any) -> None:
    _prepare(_payment(amount))


@pytest.mark.parametrize(
    "occurred_at",
    ["9999-12-31T23:59:59Z", "2026-12-05T06:05:00.000001Z", "2026-12-05T14:00:00+07:01"],
)
def test_occurred_at_beyond_the_skew_is_refused(occurred_at: str) -> None:
    problems = _problems({**event(), "occurred_at": occurred_at})
    assert problems == {"occurred_at": "must not be later than recorded_at plus 5m"}


@pytest.mark.parametrize(
    "occurred_at", ["2026-12-05T06:05:00Z", "2026-12-05T13:04:59+07:00", "1999-01-01T00:00:00Z"]
)
def test_occurred_at_within_the_skew_or_in_the_past_passes(occurred_at: str) -> None:
    _prepare({**event(), "occurred_at": occurred_at})


def test_batch_location_prefixes_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        prepare_event(
            {**event(), "occurred_at": "9999-12-31T00:00:00Z"},
            load_policy(),
            INDEXER,
            max_data_bytes=65536,
            location="events[3].",
            now=NOW,
        )
    assert [f["field"] for f in caught.value.fields] == ["events[3].occurred_at"]


POLICY_FILE = """
[categories.security_events]
required = ["source_ip", "user_id", "outcome"]
refs = { user = "user_id" }
retention = "5y"
readers = ["security_team"]
key_scope = "period"
max_future_skew = "0s"
max_age = "30d"
"""


def test_a_policy_file_sets_skew_and_age(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_FILE)
    policy = load_policy(path)
    raw = event("security_events")
    ahead = {**raw, "occurred_at": "2026-12-05T06:00:00.000001Z"}
    assert _problems(ahead, policy) == {"occurred_at": "must not be later than recorded_at plus 0s"}
    old = {**raw, "occurred_at": "2026-11-04T05:59:59Z"}
    assert _problems(old, policy) == {"occurred_at": "must not be more than 30d before recorded_at"}
    _prepare({**raw, "occurred_at": "2026-11-05T06:00:00Z"}, policy)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('non_negative = ["user_id"]', "is not one of the money fields"),
        ('non_negative = "amount"', "must be a list of field names"),
        ('refund_event_types = ["has space"]', "is not a valid event type name"),
        ('max_future_skew = "5 minutes"', "must be a duration"),
        ("max_future_skew = 300", "must be a duration"),
        ('max_age = "-1d"', "must be a duration"),
        ('max_age = "9999999d"', "is longer than"),
    ],
)
def test_bad_rules_are_config_errors_naming_the_key(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        "[categories.financial_transactions]\n"
        'required = ["user_id", "amount", "payment_method", "order_id"]\n'
        'money = ["amount"]\n'
        'refs = { user = "user_id", order = "order_id" }\n'
        'retention = "permanent"\nreaders = ["compliance_officer"]\nkey_scope = "period"\n'
        + line
        + "\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    key = line.split(" ", maxsplit=1)[0]
    assert f"categories.financial_transactions.{key}" in str(caught.value)
    assert message in str(caught.value)


# Hypothesis takes naive bounds; ``timezones`` makes each moment UTC.
_MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@settings(max_examples=300, deadline=None)
@given(
    occurred=_MOMENTS,
    now=_MOMENTS,
    skew=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)),
    max_age=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=36500)),
)
def test_occurred_at_bounds_compare_like_the_instants(
    occurred: datetime, now: datetime, skew: timedelta, max_age: timedelta | None
) -> None:
    """The rules compare canonical strings against bounds formatted once per ``now``: the
    verdict is the one datetime arithmetic gives, at the edges and beyond the calendar too."""
    policy = load_policy()
    category = dataclasses.replace(
        policy.category("security_events"), max_future_skew=skew, max_age=max_age
    )
    fields: list[dict[str, str]] = []
    _check_occurred_at(category, format_timestamp(occurred), now, fields, "")
    try:
        late = occurred > now + skew
    except OverflowError:
        late = False  # the bound lies beyond year 9999: nothing is later
    try:
        early = max_age is not None and occurred < now - max_age
    except OverflowError:
        early = False  # the bound lies before year 1: nothing is earlier
    expected = ["must not be later"] if late else ["must not be more than"] if early else []
    assert [f["problem"][: len(e)] for f, e in zip(fields, expected, strict=False)] == expected
    assert len(fields) == len(expected)
