"""prepare_event: envelope and policy rules, normalisation, and errors that never echo values."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from audit_ledger.core.canonical import MAX_SAFE_INTEGER, canonical_json
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import ValidationError
from audit_ledger.ledger.appends.prepare import PreparedEvent, prepare_event
from audit_ledger.policy import Policy, load_policy
from tests.support.factories import event

CANARY = "CANARY-c4n4ry"
MAX_DATA = 64 * 1024


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def indexer() -> BlindIndexer:
    return BlindIndexer(Secret(b"k" * 32))


def prepare(raw: object, policy: Policy, indexer: BlindIndexer, **kw: Any) -> PreparedEvent:
    return prepare_event(
        raw, policy, indexer, max_data_bytes=kw.pop("max_data_bytes", MAX_DATA), **kw
    )


def problems(raw: object, policy: Policy, indexer: BlindIndexer, **kw: Any) -> dict[str, str]:
    """field -> problem of the ValidationError ``raw`` must raise; checks nothing is echoed."""
    with pytest.raises(ValidationError) as caught:
        prepare(raw, policy, indexer, **kw)
    exc = caught.value
    out = {f["field"]: f["problem"] for f in exc.fields}
    assert len(out) == len(exc.fields), "a field is reported twice"
    shown = f"{exc} {exc.detail} {exc.fields!r} {exc!r}"
    assert CANARY not in shown
    return out


# --- the happy path ------------------------------------------------------------------------------


def test_valid_event_is_normalised(policy: Policy, indexer: BlindIndexer) -> None:
    raw = event()
    raw["event_id"] = raw["event_id"].upper()
    prepared = prepare(raw, policy, indexer)
    assert prepared.event_id == raw["event_id"].lower()
    assert prepared.occurred_at == "2026-11-28T03:55:17.123456Z"
    assert prepared.category == "financial_transactions"
    assert prepared.data_bytes == canonical_json(raw["data"])
    assert prepared.refs == {
        "user": indexer.index("user", 4242),
        "order": indexer.index("order", "ORD-2026-0001"),
    }
    assert prepared.subject is None  # financial keys are per period


def test_subject_is_the_blind_index_of_the_user(policy: Policy, indexer: BlindIndexer) -> None:
    one = prepare(event("data_privacy_events", user_id=123), policy, indexer)
    two = prepare(event("data_privacy_events", user_id="123"), policy, indexer)
    other = prepare(event("data_privacy_events", user_id=124), policy, indexer)
    assert one.subject == two.subject == indexer.index("subject", 123)
    assert one.subject != other.subject
    assert "123" not in (one.subject or "")


def test_same_request_ignores_event_id_case_and_offsets(
    policy: Policy, indexer: BlindIndexer
) -> None:
    raw = event()
    other = copy.deepcopy(raw)
    other["event_id"] = raw["event_id"].upper()
    other["occurred_at"] = "2026-11-28T03:55:17.123456Z"
    other["data"] = dict(reversed(list(raw["data"].items())))
    assert prepare(raw, policy, indexer).same_request(prepare(other, policy, indexer))
    other["data"]["amount"] = "150000.01"
    assert not prepare(raw, policy, indexer).same_request(prepare(other, policy, indexer))


def test_correlation_id_is_optional(policy: Policy, indexer: BlindIndexer) -> None:
    raw = event()
    del raw["correlation_id"]
    assert prepare(raw, policy, indexer).correlation_id is None


def test_money_as_integer_or_decimal_string(policy: Policy, indexer: BlindIndexer) -> None:
    for amount in (0, 150000, MAX_SAFE_INTEGER, "0", "1" * 30 + "." + "9" * 18):
        prepare(event(amount=amount), policy, indexer)
    # Negative amounts: only in refund event types (the policy's rule, issue #12 item 5).
    for amount in (-5, "-12.50"):
        prepare({**event(amount=amount), "event_type": "refund"}, policy, indexer)


# --- members -------------------------------------------------------------------------------------


@pytest.mark.parametrize("member", ["event_id", "category", "event_type", "occurred_at", "data"])
def test_required_members(policy: Policy, indexer: BlindIndexer, member: str) -> None:
    raw = event()
    del raw[member]
    assert problems(raw, policy, indexer)[member] == "required"
    raw[member] = None
    assert problems(raw, policy, indexer)[member] == "required"


def test_unknown_members_are_named(policy: Policy, indexer: BlindIndexer) -> None:
    raw = {**event(), "extra": CANARY, "Data": {"x": CANARY}}
    found = problems(raw, policy, indexer, location="events[4].")
    assert found == {"events[4].Data": "unknown member", "events[4].extra": "unknown member"}


def test_not_an_object(policy: Policy, indexer: BlindIndexer) -> None:
    for raw in ([CANARY], CANARY, 5, None):
        assert problems(raw, policy, indexer, location="events[2].") == {
            "events[2]": "not an object"
        }


def test_every_envelope_problem_is_reported_at_once(policy: Policy, indexer: BlindIndexer) -> None:
    raw = {
        "event_id": f"{CANARY}-not-a-uuid",
        "category": CANARY,
        "event_type": f"{CANARY} has spaces",
        "occurred_at": f"{CANARY}T10:00:00",
        "correlation_id": f"{CANARY}\u00e9 not ascii",
        "data": [CANARY],
    }
    assert set(problems(raw, policy, indexer)) == {
        "event_id",
        "category",
        "event_type",
        "occurred_at",
        "correlation_id",
        "data",
    }


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-28T10:55:17",  # no offset
        "2026-11-28 10:55:17Z",
        "2026-02-30T10:55:17Z",
        "2026-11-28T24:00:00Z",
        "0001-01-01T00:30:00+01:00",  # before year 1 in UTC
        "\uff12\uff10\uff12\uff16-11-28T10:55:17Z",  # full-width digits
        1732768517,
    ],
)
def test_bad_occurred_at(policy: Policy, indexer: BlindIndexer, occurred_at: object) -> None:
    assert "occurred_at" in problems({**event(), "occurred_at": occurred_at}, policy, indexer)


@pytest.mark.parametrize(
    "event_id",
    [
        "123e4567e89b12d3a456426614174000",  # not hyphenated
        "{123e4567-e89b-12d3-a456-426614174000}",
        "123e4567-e89b-12d3-a456-42661417400g",
        "123e4567-e89b-12d3-a456-4266141740001",
        123,
    ],
)
def test_bad_event_id(policy: Policy, indexer: BlindIndexer, event_id: object) -> None:
    assert "event_id" in problems({**event(), "event_id": event_id}, policy, indexer)


def test_system_category_is_refused_unless_allowed(policy: Policy, indexer: BlindIndexer) -> None:
    raw = {**event(), "category": "ledger_operations", "data": {"note": CANARY}}
    assert problems(raw, policy, indexer) == {"category": "written only by the service itself"}
    assert prepare(raw, policy, indexer, allow_system=True).category == "ledger_operations"


# --- data ----------------------------------------------------------------------------------------


def test_required_data_fields(policy: Policy, indexer: BlindIndexer) -> None:
    raw = event("security_events")
    del raw["data"]["source_ip"]
    raw["data"]["outcome"] = None
    assert problems(raw, policy, indexer) == {
        "data.source_ip": "required",
        "data.outcome": "required",
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"amount": 1.0}, "data.amount"),
        ({"fee": 0.5}, "data.fee"),
        ({"meta": {"rate": 1e-3}}, "data.meta.rate"),
        ({"items": [1, 2, {"price": 9.99}]}, "data.items[2].price"),
        ({"nan": float("nan")}, "data.nan"),
        ({"inf": float("inf")}, "data.inf"),
    ],
)
def test_floats_anywhere_in_data(
    policy: Policy, indexer: BlindIndexer, data: dict[str, Any], field: str
) -> None:
    found = problems(event(**data), policy, indexer)
    assert any(field in name or field in problem for name, problem in found.items()), found
    assert any("float" in problem for problem in found.values())


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**64, -(10**30)])
def test_integers_beyond_2_53(policy: Policy, indexer: BlindIndexer, value: int) -> None:
    found = problems(event(note={"n": [value]}), policy, indexer)
    assert found, found
    assert not any(str(value) in f"{name} {problem}" for name, problem in found.items())
    for edge in (2**53 - 1, -(2**53 - 1)):
        prepare(event(note={"n": [edge]}), policy, indexer)


@pytest.mark.parametrize(
    "amount",
    [
        True,
        False,
        1.5,
        150000.0,
        f"{CANARY}",
        "1,000",
        "1e5",
        "01",
        "+5",
        ".5",
        "5.",
        " 5",
        "1" * 31,
        "1." + "1" * 19,
        "\u0661\u0662\u0663",  # Arabic-Indic digits
        ["5"],
        {"value": 5},
    ],
)
def test_bad_money(policy: Policy, indexer: BlindIndexer, amount: object) -> None:
    found = problems(event(amount=amount), policy, indexer)
    assert "data.amount" in found or any("data.amount" in p for p in found.values()), found


@pytest.mark.parametrize("user_id", ["", True, 1.0, None, [1], {"id": 1}])
def test_bad_reference_values(policy: Policy, indexer: BlindIndexer, user_id: object) -> None:
    found = problems(event(user_id=user_id), policy, indexer)
    assert any(name.startswith("data") for name in found), found


def test_data_size_limit(policy: Policy, indexer: BlindIndexer) -> None:
    found = problems(event(note=CANARY * 100), policy, indexer, max_data_bytes=500)
    assert found == {"data": "larger than 500 bytes"}


def test_lone_surrogates_are_refused(policy: Policy, indexer: BlindIndexer) -> None:
    found = problems(event(note="\ud800" + CANARY), policy, indexer)
    assert any(name.startswith("data") for name in found)


def test_canaries_never_appear_in_any_error(policy: Policy, indexer: BlindIndexer) -> None:
    """One event with a canary in every place a value can go wrong."""
    raw = {
        "event_id": CANARY,
        "category": "financial_transactions",
        "event_type": CANARY + " !",
        "occurred_at": CANARY,
        "correlation_id": CANARY + " \n",
        "data": {
            "user_id": [CANARY],
            "amount": CANARY,
            "payment_method": CANARY,
            "order_id": {CANARY: CANARY},
            "nested": {"deep": [CANARY, 0.5]},
        },
    }
    found = problems(raw, policy, indexer, location="events[0].")
    assert set(found) >= {
        "events[0].event_id",
        "events[0].event_type",
        "events[0].occurred_at",
        "events[0].correlation_id",
        "events[0].data.user_id",
        "events[0].data.amount",
        "events[0].data.order_id",
    }


def test_prepared_event_pickles_to_an_equal_event(policy: Policy, indexer: BlindIndexer) -> None:
    # Import workers send prepared events to the committing process as pickles.
    for raw in (event(), event("data_privacy_events", user_id=123)):
        prepared = prepare(raw, policy, indexer)
        assert pickle.loads(pickle.dumps(prepared)) == prepared  # noqa: S301 - our own bytes
