"""Who may call what, over a real server on both backends (DESIGN §2, §4).

Two parts:

* a role-by-endpoint matrix: every endpoint of DESIGN §4 called by every role, anonymously, with
  a revoked token, an unknown token and a malformed ``Authorization`` header, against a table of
  expected statuses written out below (401 — with ``WWW-Authenticate`` — and 403 kept distinct);
* canaries: events of the three categories carry unique strings in their data, every role fetches
  everything it may, and the strings must show up only for the category's plaintext reader. Each
  successful read must append exactly one ``records_read`` entry to ``ledger_operations``.

The application runs in the test process (:func:`tests.support.servers.module_app_server`), one
per backend for the whole module.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from audit_ledger.ledger.reads import Query
from tests.support.api import (
    CATEGORIES,
    READER_OF,
    assert_problem,
    open_ledger,
    records_read_count,
)
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

# --- the role-by-endpoint matrix ------------------------------------------------------------

ROLES = ("writer", "compliance_officer", "privacy_officer", "security_team", "auditor", "admin")
CALLERS = (*ROLES, "anonymous", "revoked", "unknown", "malformed")
# A token of the right shape that no principal holds.
UNKNOWN_TOKEN = "alt_" + "A" * 43


def caller_headers(server: InProcessServer, caller: str) -> dict[str, str]:
    if caller in server.tokens:
        return server.headers(caller)
    if caller == "anonymous":
        return {}
    if caller == "unknown":
        return {"Authorization": f"Bearer {UNKNOWN_TOKEN}"}
    assert caller == "malformed"
    return {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Callable[[], Any] | None = None


def _calls(seq_of: dict[str, int]) -> dict[str, Call]:
    fin, priv, sec = (seq_of[c] for c in CATEGORIES)
    ops = seq_of["ledger_operations"]
    return {
        "POST /v1/events": Call("POST", "/v1/events", body=event),
        "POST /v1/events/batch": Call(
            "POST", "/v1/events/batch", body=lambda: {"events": [event(c) for c in CATEGORIES]}
        ),
        "GET /v1/events": Call("GET", "/v1/events"),
        "GET /v1/events?category=fin": Call(
            "GET", "/v1/events", {"category": "financial_transactions"}
        ),
        "GET /v1/events?category=priv": Call(
            "GET", "/v1/events", {"category": "data_privacy_events"}
        ),
        "GET /v1/events?category=sec": Call("GET", "/v1/events", {"category": "security_events"}),
        "GET /v1/events?category=ops": Call("GET", "/v1/events", {"category": "ledger_operations"}),
        "POST /v1/events/search": Call("POST", "/v1/events/search", body=lambda: {"user_id": 4242}),
        "POST /v1/events/search fin": Call(
            "POST",
            "/v1/events/search",
            body=lambda: {"category": "financial_transactions", "order_id": "ORD-2026-0001"},
        ),
        "GET /v1/events/{fin}": Call("GET", f"/v1/events/{fin}"),
        "GET /v1/events/{priv}": Call("GET", f"/v1/events/{priv}"),
        "GET /v1/events/{sec}": Call("GET", f"/v1/events/{sec}"),
        "GET /v1/events/{ops}": Call("GET", f"/v1/events/{ops}"),
        "GET /v1/log/checkpoint": Call("GET", "/v1/log/checkpoint"),
        "GET /v1/log/verifier-key": Call("GET", "/v1/log/verifier-key"),
        "GET /v1/log/leaves": Call("GET", "/v1/log/leaves", {"start": 0, "end": 2}),
        "GET /v1/log/proof/inclusion": Call(
            "GET", "/v1/log/proof/inclusion", {"seq": 0, "tree_size": 2}
        ),
        "GET /v1/log/proof/consistency": Call(
            "GET", "/v1/log/proof/consistency", {"first": 1, "second": 2}
        ),
        "GET /healthz": Call("GET", "/healthz"),
        "GET /readyz": Call("GET", "/readyz"),
        "GET /metrics": Call("GET", "/metrics"),
    }


# fmt: off
#                                    writer  comp  priv  sec   aud   admin anon  revok unkn  malf
MATRIX: dict[str, tuple[int, ...]] = {
    "POST /v1/events":               (201,   403,  403,  403,  403,  403,  401,  401,  401,  401),
    "POST /v1/events/batch":         (201,   403,  403,  403,  403,  403,  401,  401,  401,  401),
    "GET /v1/events":                (403,   200,  200,  200,  200,  403,  401,  401,  401,  401),
    "GET /v1/events?category=fin":   (403,   200,  403,  403,  200,  403,  401,  401,  401,  401),
    "GET /v1/events?category=priv":  (403,   403,  200,  403,  200,  403,  401,  401,  401,  401),
    "GET /v1/events?category=sec":   (403,   403,  403,  200,  200,  403,  401,  401,  401,  401),
    "GET /v1/events?category=ops":   (403,   403,  403,  200,  200,  403,  401,  401,  401,  401),
    "POST /v1/events/search":        (403,   200,  200,  200,  200,  403,  401,  401,  401,  401),
    "POST /v1/events/search fin":    (403,   200,  403,  403,  200,  403,  401,  401,  401,  401),
    "GET /v1/events/{fin}":          (403,   200,  403,  403,  200,  403,  401,  401,  401,  401),
    "GET /v1/events/{priv}":         (403,   403,  200,  403,  200,  403,  401,  401,  401,  401),
    "GET /v1/events/{sec}":          (403,   403,  403,  200,  200,  403,  401,  401,  401,  401),
    "GET /v1/events/{ops}":          (403,   403,  403,  200,  200,  403,  401,  401,  401,  401),
    "GET /v1/log/checkpoint":        (200,   200,  200,  200,  200,  200,  401,  401,  401,  401),
    "GET /v1/log/verifier-key":      (200,   200,  200,  200,  200,  200,  200,  200,  200,  200),
    "GET /v1/log/leaves":            (403,   403,  403,  403,  200,  403,  401,  401,  401,  401),
    "GET /v1/log/proof/inclusion":   (403,   403,  403,  403,  200,  403,  401,  401,  401,  401),
    "GET /v1/log/proof/consistency": (403,   403,  403,  403,  200,  403,  401,  401,  401,  401),
    "GET /healthz":                  (200,   200,  200,  200,  200,  200,  200,  200,  200,  200),
    "GET /readyz":                   (200,   200,  200,  200,  200,  200,  200,  200,  200,  200),
    "GET /metrics":                  (200,   200,  200,  200,  200,  200,  200,  200,  200,  200),
}
# fmt: on
#: Successful calls to these endpoints are reads of records and must be recorded.
RECORDED = {
    name for name in MATRIX if name.startswith(("GET /v1/events", "POST /v1/events/search"))
}
RECORDED.add("GET /v1/log/leaves")
TEXT_PLAIN = {"GET /v1/log/checkpoint", "GET /v1/log/verifier-key", "GET /metrics"}

server = module_app_server()


def _seed(server: InProcessServer) -> dict[str, int]:
    """One event per category plus a checkpoint; the seq of each (and of an operations entry)."""
    seq_of: dict[str, int] = {}
    for category in CATEGORIES:
        r = server.post("/v1/events", json=event(category), headers=server.headers("writer"))
        assert r.status_code == 201, r.text
        seq_of[category] = r.json()["seq"]
    with open_ledger(server.settings) as ledger:
        ops = ledger.reads.page_for({"security_team"}, Query(category="ledger_operations", limit=1))
        seq_of["ledger_operations"] = ops.events[0].seq
        assert ledger.log.checkpoint() is not None
    return seq_of


def test_role_endpoint_matrix(server: InProcessServer) -> None:
    assert set(MATRIX) == set(_calls(dict.fromkeys((*CATEGORIES, "ledger_operations"), 0)))
    calls = _calls(_seed(server))
    failures = []
    with open_ledger(server.settings) as ledger:
        for name, expected_row in MATRIX.items():
            call = calls[name]
            for caller, expected in zip(CALLERS, expected_row, strict=True):
                before = records_read_count(ledger)
                body = call.body() if call.body is not None else None
                r = server.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=body,
                    headers=caller_headers(server, caller),
                )
                if r.status_code != expected:
                    failures.append(f"{name} as {caller}: {r.status_code}, expected {expected}")
                    continue
                if expected >= 400:
                    assert_problem(r, expected)
                elif name in TEXT_PLAIN:
                    assert r.headers["content-type"].startswith("text/plain"), name
                else:
                    assert r.headers["content-type"] == "application/json", name
                recorded = records_read_count(ledger) - before
                want = 1 if expected == 200 and name in RECORDED else 0
                assert recorded == want, f"{name} as {caller}: {recorded} records_read entries"
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer   alt_",
        "bearer alt_short",
        "Bearer alt_" + "A" * 44,
        "Token " + UNKNOWN_TOKEN,
        UNKNOWN_TOKEN,
        "Bearer " + UNKNOWN_TOKEN + " extra",
        "Basic Og==",
        b"Bearer alt_\xff\xfe" + b"A" * 41,
    ],
)
def test_bad_authorization_headers_are_401(
    server: InProcessServer, authorization: str | bytes
) -> None:
    value = authorization if isinstance(authorization, bytes) else authorization.encode()
    for method, path in (("GET", "/v1/events"), ("POST", "/v1/events"), ("GET", "/v1/log/leaves")):
        r = server.request(method, path, headers={b"Authorization": value})
        assert_problem(r, 401)
        assert UNKNOWN_TOKEN not in r.text


def test_scheme_is_case_insensitive(server: InProcessServer) -> None:
    token = server.tokens["auditor"]
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = server.get("/v1/log/verifier-key", headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200
        r = server.get(
            "/v1/events",
            params={"limit": 1},
            headers={"Authorization": f"{scheme} {token}"},
        )
        assert r.status_code == 200, r.text


# --- no plaintext for the wrong eyes ----------------------------------------------------------


def _canary_events() -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    canary = {c: f"CANARY{c[:3].upper()}{uuid.uuid4().hex}" for c in CATEGORIES}
    raws = {
        "financial_transactions": event(
            "financial_transactions",
            user_id=canary["financial_transactions"] + "-user",
            order_id=canary["financial_transactions"] + "-order",
            payment_method=canary["financial_transactions"],
        ),
        "data_privacy_events": event(
            "data_privacy_events",
            user_id=canary["data_privacy_events"] + "-user",
            data_type=canary["data_privacy_events"],
        ),
        "security_events": event(
            "security_events",
            user_id=canary["security_events"] + "-user",
            note=canary["security_events"],
        ),
    }
    return canary, raws


def test_plaintext_reaches_only_the_category_reader(server: InProcessServer) -> None:
    canary, raws = _canary_events()
    seqs: dict[str, int] = {}
    for category, raw in raws.items():
        r = server.post("/v1/events", json=raw, headers=server.headers("writer"))
        assert r.status_code == 201, r.text
        seqs[category] = r.json()["seq"]

    seen: dict[str, list[str]] = {role: [] for role in ROLES}
    reads = 0
    with open_ledger(server.settings) as ledger:

        def fetch(role: str, method: str, path: str, **kw: Any) -> httpx.Response:
            nonlocal reads
            before = records_read_count(ledger)
            r = server.request(method, path, headers=server.headers(role), **kw)
            assert r.status_code in {200, 403}, f"{method} {path} as {role}: {r.text}"
            seen[role].append(r.text)
            recorded = records_read_count(ledger) - before
            assert recorded == (1 if r.status_code == 200 else 0), (method, path, role)
            reads += recorded
            if r.status_code == 403:
                assert_problem(r, 403)
            return r

        def listing(role: str, params: dict[str, Any]) -> list[dict[str, Any]] | None:
            out: list[dict[str, Any]] = []
            params = {**params, "limit": 1000}
            while True:
                r = fetch(role, "GET", "/v1/events", params=params)
                if r.status_code != 200:
                    return None
                out.extend(r.json()["events"])
                if r.json()["next_cursor"] is None:
                    return out
                params["cursor"] = r.json()["next_cursor"]

        # Two passes: in the second, security_team's view of ledger_operations includes the
        # records_read entries of every search made in the first (they must hold no plaintext).
        for _ in range(2):
            for role in ROLES:
                everything = listing(role, {})
                if role in {"writer", "admin"}:
                    assert everything is None
                else:
                    assert everything is not None
                    _check_visibility(role, everything, seqs, raws)
                for category in (*CATEGORIES, "ledger_operations"):
                    page = listing(role, {"category": category})
                    allowed = role == "auditor" or READER_OF[category] == role
                    assert (page is not None) == allowed, (role, category)
                    if page is not None:
                        assert {e["header"]["category"] for e in page} <= {category}
                for category, raw in raws.items():
                    for body in (
                        {"user_id": raw["data"]["user_id"]},
                        {"category": category, "user_id": raw["data"]["user_id"]},
                    ):
                        r = fetch(role, "POST", "/v1/events/search", json=body)
                        _check_search(role, r, body, category=category, seq=seqs[category], raw=raw)
                    r = fetch(role, "GET", f"/v1/events/{seqs[category]}")
                    allowed = role == "auditor" or READER_OF[category] == role
                    assert r.status_code == (200 if allowed else 403), (role, category)
                    if allowed:
                        _check_view(role, r.json(), raw)
                r = fetch(
                    role,
                    "POST",
                    "/v1/events/search",
                    json={"order_id": raws["financial_transactions"]["data"]["order_id"]},
                )
                if r.status_code == 200:
                    found = [e["seq"] for e in r.json()["events"]]
                    visible = role in {"auditor", "compliance_officer"}
                    assert found == ([seqs["financial_transactions"]] if visible else [])
                if role == "auditor":
                    fetch(role, "GET", "/v1/log/leaves", params={"start": 0, "end": 1})

        for category, text in canary.items():
            for role, bodies in seen.items():
                leaked = any(text in b for b in bodies)
                assert leaked == (role == READER_OF[category]), (category, role)
        # The records_read entries name who read and what, never the identifiers searched for.
        ops = ledger.reads.page_for(
            {"security_team"},
            Query(category="ledger_operations", event_type="records_read", limit=1000),
        )
        assert reads > 0
        recorded = [e.data for e in ops.events]
        assert all(d is not None for d in recorded)
        assert {d["principal"] for d in recorded if d} >= {f"p-{r}" for r in ROLES} - {
            "p-writer",
            "p-admin",
        }
        for text in canary.values():
            assert text not in repr(recorded)


def _check_visibility(
    role: str,
    events: list[dict[str, Any]],
    seqs: dict[str, int],
    raws: dict[str, dict[str, Any]],
) -> None:
    visible = (
        {*CATEGORIES, "ledger_operations"}
        if role == "auditor"
        else {c for c, r in READER_OF.items() if r == role}
    )
    assert {e["header"]["category"] for e in events} <= visible, role
    for view in events:
        if role == "auditor":  # headers of every category, never a payload
            assert view["payload_state"] == "withheld", view
            assert "data" not in view, view
        else:  # an officer sees only its own categories, in plaintext
            assert view["payload_state"] == "present", view
            assert isinstance(view["data"], dict), view
    by_seq = {e["seq"]: e for e in events}
    for category, seq in seqs.items():
        if category in visible:
            _check_view(role, by_seq[seq], raws[category])
        else:
            assert seq not in by_seq


def _check_view(role: str, view: dict[str, Any], raw: dict[str, Any]) -> None:
    header = view["header"]
    assert header["event_id"] == raw["event_id"]
    assert header["category"] == raw["category"]
    assert set(header["refs"].values()).isdisjoint({str(v) for v in raw["data"].values()})
    if role == "auditor":
        assert view["payload_state"] == "withheld"
        assert "data" not in view
    else:
        assert READER_OF[raw["category"]] == role
        assert view["payload_state"] == "present"
        assert view["data"] == raw["data"]


def _check_search(
    role: str,
    r: httpx.Response,
    body: dict[str, Any],
    *,
    category: str,
    seq: int,
    raw: dict[str, Any],
) -> None:
    readable = READER_OF[category] == role or role == "auditor"
    if role in {"writer", "admin"} or ("category" in body and not readable):
        assert r.status_code == 403, (role, body)
        return
    assert r.status_code == 200, (role, body, r.text)
    found = r.json()["events"]
    if readable:
        assert [e["seq"] for e in found] == [seq], (role, body)
        _check_view(role, found[0], raw)
    else:
        assert found == [], (role, body)
