"""HTTP: erasure requests and legal holds, on each backend, against the application served in
the test process (DESIGN §4).

POST and GET /v1/erasure-requests are for the privacy officer; /v1/legal-holds for admin and
compliance officer. An erasure a hold blocked is resumed by the hold's release. Refusals by
policy are 409 problem+json, bad bodies 422 problem+json — never a 5xx, never an echo of the
submitted identifier, and never a partial write.
"""

from __future__ import annotations

from typing import Any

import httpx

from audit_ledger.ledger.service import Ledger
from tests.integration.api.conftest import InProcessServer
from tests.support.factories import event

PRIV, FIN, SEC = "data_privacy_events", "financial_transactions", "security_events"
CANARY = "canary-api-subject-9c04d1"
PROBLEM = "application/problem+json"
NOT_ALLOWED = {
    "erasure": ("writer", "auditor", "compliance_officer", "security_team", "admin"),
    "holds": ("privacy_officer", "writer", "auditor", "security_team"),
}


def post(server: InProcessServer, path: str, role: str | None, body: Any = None, **kw: Any) -> Any:
    headers = server.headers(role) if role else {}
    if body is not None:
        kw["json"] = body
    return server.post(path, headers={**headers, **kw.pop("headers", {})}, **kw)


def get(server: InProcessServer, path: str, role: str) -> httpx.Response:
    return server.get(path, headers=server.headers(role))


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].split(";")[0] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    if slug is not None:
        assert body["type"].rsplit(":", 1)[-1] == slug, body
    assert CANARY not in r.text
    return body


def seed(server: InProcessServer) -> list[int]:
    ledger = Ledger.open(server.settings)
    try:
        raws = [
            event(PRIV, user_id=CANARY),
            event(PRIV, user_id="someone-else"),
            event(FIN, user_id=CANARY),
            event(PRIV, user_id="held-subject"),
        ]
        return [r.seq for r in ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")]
    finally:
        ledger.close()


def log_size(server: InProcessServer) -> int:
    ledger = Ledger.open(server.settings)
    try:
        return ledger.log.size()
    finally:
        ledger.close()


BAD_ERASURES: list[Any] = [
    {},
    {"user_id": None},
    {"user_id": True},
    {"user_id": ""},
    {"user_id": {"id": CANARY}},
    {"user_id": [CANARY]},
    {"user_id": CANARY, "categories": PRIV},
    {"user_id": CANARY, "categories": [1]},
    {"user_id": CANARY, "categories": ["no_such_category"]},
    {"user_id": CANARY, "reason": "unknown member"},
    [CANARY],
    CANARY,
]


def test_erasure_requests(app_server: InProcessServer) -> None:
    seqs = seed(app_server)
    mine, other, fin = seqs[0], seqs[1], seqs[2]

    for role in NOT_ALLOWED["erasure"]:
        assert_problem(
            post(app_server, "/v1/erasure-requests", role, {"user_id": CANARY}), 403, "forbidden"
        )
    assert_problem(post(app_server, "/v1/erasure-requests", None, {"user_id": CANARY}), 401)

    size = log_size(app_server)
    for names in ([FIN], [PRIV, FIN], [SEC]):
        r = post(
            app_server,
            "/v1/erasure-requests",
            "privacy_officer",
            {"user_id": CANARY, "categories": names},
        )
        assert_problem(r, 409, "refused")
    for body in BAD_ERASURES:
        r = post(app_server, "/v1/erasure-requests", "privacy_officer", body)
        problem = assert_problem(r, 422, "validation")
        assert problem["errors"], body
    for raw in (b"{", b'{"user_id": 1.5}', b'{"user_id": 1e400}', b"\xff"):
        r = post(
            app_server,
            "/v1/erasure-requests",
            "privacy_officer",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert_problem(r, 422, "validation")
    r = post(
        app_server,
        "/v1/erasure-requests",
        "privacy_officer",
        content=b"user_id=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(r, 415)
    assert log_size(app_server) == size  # nothing recorded for refused or invalid requests

    r = post(app_server, "/v1/erasure-requests", "privacy_officer", {"user_id": CANARY})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].split(";")[0] == "application/json"
    report = r.json()
    assert CANARY not in r.text
    assert report["dry_run"] is False
    assert report["recorded_as_seq"] == size
    assert report["kept_by_policy"] == [FIN, SEC]
    assert report["categories"][PRIV]["payloads_purged"] == 1
    assert report["categories"][PRIV]["seq_ranges"] == [[mine, mine]]

    erased = get(app_server, f"/v1/events/{mine}", "privacy_officer").json()
    assert erased["payload_state"] == "erased"
    assert erased["payload_state_seq"] == report["recorded_as_seq"]
    assert "data" not in erased
    kept = get(app_server, f"/v1/events/{other}", "privacy_officer").json()
    assert kept["payload_state"] == "present"
    assert kept["data"]["user_id"] == "someone-else"
    assert (
        get(app_server, f"/v1/events/{fin}", "compliance_officer").json()["data"]["user_id"]
        == CANARY
    )

    # Only the subject's blind index is recorded; the raw id is nowhere in the operation.
    op = get(app_server, f"/v1/events/{report['recorded_as_seq']}", "security_team").json()
    assert op["header"]["event_type"] == "erasure"
    assert op["data"]["requested_by"] == "p-privacy_officer"
    assert CANARY not in str(op)


BAD_HOLDS: list[Any] = [
    {},
    {"scope": 5},
    {"scope": "forever"},
    {"scope": "subject"},
    {"scope": "subject", "user_id": ""},
    {"scope": "subject", "user_id": True},
    {"scope": "subject", "user_id": [CANARY]},
    {"scope": "order", "order_id": {"id": 1}},
    {"scope": "category"},
    {"scope": "category", "category": "no_such_category"},
    {"scope": "category", "category": 3},
    {"scope": "time_range"},
    {"scope": "time_range", "since": "yesterday"},
    {"scope": "time_range", "since": "0001-01-01T00:00:00+01:00"},
    {"scope": "time_range", "since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    {"scope": "subject", "user_id": CANARY, "reason": 5},
    {"scope": "subject", "user_id": CANARY, "hold_id": "hold_mine"},
    [{"scope": "category", "category": PRIV}],
]


def test_legal_holds(app_server: InProcessServer) -> None:
    seqs = seed(app_server)
    held_seq = seqs[3]
    managers = ("admin", "compliance_officer")

    for role in NOT_ALLOWED["holds"]:
        assert_problem(
            post(app_server, "/v1/legal-holds", role, {"scope": "category", "category": PRIV}),
            403,
        )
        assert_problem(get(app_server, "/v1/legal-holds", role), 403)
        assert_problem(post(app_server, "/v1/legal-holds/hold_x/release", role), 403)

    size = log_size(app_server)
    for i, body in enumerate(BAD_HOLDS):
        manager = managers[i % 2]
        problem = assert_problem(post(app_server, "/v1/legal-holds", manager, body), 422)
        assert problem["errors"], body
    for manager in managers:
        assert_problem(post(app_server, "/v1/legal-holds/hold_nope/release", manager), 404)
    assert log_size(app_server) == size

    created: dict[str, dict[str, Any]] = {}
    for i, body in enumerate(
        (
            {"scope": "subject", "user_id": "held-subject", "reason": "case 2026/17"},
            {"scope": "order", "order_id": "ORD-2026-0001"},
            {"scope": "category", "category": SEC},
            {
                "scope": "time_range",
                "since": "2026-01-01T00:00:00+07:00",
                "until": "2026-02-01T00:00:00Z",
            },
        )
    ):
        manager = managers[i % 2]
        r = post(app_server, "/v1/legal-holds", manager, body)
        assert r.status_code == 201, r.text
        hold = r.json()
        assert hold["scope"] == body["scope"]
        assert hold["created_by"] == f"p-{manager}"
        assert hold["released_seq"] is None
        created[hold["scope"]] = hold
    assert len(created["subject"]["scope_value"]) == 64  # blind index, not the id
    assert "held-subject" not in str(created)
    assert created["category"]["scope_value"] == SEC
    assert created["time_range"]["since"] == "2025-12-31T17:00:00.000000Z"
    assert created["time_range"]["until"] == "2026-02-01T00:00:00.000000Z"

    for role in managers:
        r = get(app_server, "/v1/legal-holds", role)
        assert r.status_code == 200
        assert {h["hold_id"] for h in r.json()["holds"]} == {h["hold_id"] for h in created.values()}

    # Each hold is a ledger_operations entry.
    for hold in created.values():
        op = get(app_server, f"/v1/events/{hold['created_seq']}", "security_team").json()
        assert op["header"]["category"] == "ledger_operations"
        assert op["header"]["event_type"] == "legal_hold_created"
        assert op["data"]["hold_id"] == hold["hold_id"]

    # The subject hold stops an erasure, and the report names it.
    blocked = post(
        app_server, "/v1/erasure-requests", "privacy_officer", {"user_id": "held-subject"}
    )
    assert blocked.status_code == 201, blocked.text
    part = blocked.json()["categories"][PRIV]
    assert (part["payloads_purged"], part["held_skipped"]) == (0, 1)
    assert part["holds"] == [created["subject"]["hold_id"]]
    assert blocked.json()["state"] == "blocked"
    assert blocked.json()["blocked_by"] == [created["subject"]["hold_id"]]
    state = get(app_server, f"/v1/events/{held_seq}", "privacy_officer").json()
    assert state["payload_state"] == "present"

    hold_id = created["subject"]["hold_id"]
    assert created["subject"]["created_by"] == "p-admin"
    # A release says why, or nothing: a reason that is not a string, or another member, is 422
    # and releases nothing.
    for bad_body in ({"reason": 7}, {"reason": "ok", "hold": "x"}, ["reason"]):
        assert_problem(
            post(app_server, f"/v1/legal-holds/{hold_id}/release", "admin", bad_body), 422
        )
    r = post(
        app_server,
        f"/v1/legal-holds/{hold_id}/release",
        "compliance_officer",
        {"reason": "case 17 closed"},
    )
    assert r.status_code == 200, r.text
    released = r.json()
    assert released["hold_id"] == hold_id
    op = get(app_server, f"/v1/events/{released['released_seq']}", "security_team").json()
    assert op["header"]["event_type"] == "legal_hold_released"
    assert op["data"]["reason"] == "case 17 closed"
    assert op["data"]["actor"] == "p-compliance_officer"
    assert_problem(post(app_server, f"/v1/legal-holds/{hold_id}/release", "admin"), 404)
    listed = {h["hold_id"]: h for h in get(app_server, "/v1/legal-holds", "admin").json()["holds"]}
    assert listed[hold_id]["released_seq"] == released["released_seq"]

    # The release resumed the blocked erasure: the held record is erased, by a later entry.
    state = get(app_server, f"/v1/events/{held_seq}", "privacy_officer").json()
    assert state["payload_state"] == "erased"
    assert state["payload_state_seq"] > released["released_seq"]
    (done,) = get(app_server, "/v1/erasure-requests", "privacy_officer").json()["erasure_requests"]
    assert done["request_id"] == blocked.json()["request_id"]
    assert (done["state"], done["blocked_by"]) == ("done", [])
    assert done["last_op_seq"] == state["payload_state_seq"]
    again = post(app_server, "/v1/erasure-requests", "privacy_officer", {"user_id": "held-subject"})
    assert again.status_code == 201, again.text
    assert again.json()["categories"][PRIV]["payloads_purged"] == 0
    assert again.json()["state"] == "done"


def test_erasure_requests_are_listed_for_the_privacy_officer(app_server: InProcessServer) -> None:
    seed(app_server)
    for role in NOT_ALLOWED["erasure"]:
        assert_problem(get(app_server, "/v1/erasure-requests", role), 403, "forbidden")
    assert_problem(app_server.get("/v1/erasure-requests"), 401)
    for bad in ("cancelled", "", "DONE", CANARY):
        r = get(app_server, f"/v1/erasure-requests?state={bad}", "privacy_officer")
        assert_problem(r, 422)

    r = post(app_server, "/v1/legal-holds", "admin", {"scope": "subject", "user_id": CANARY})
    assert r.status_code == 201, r.text
    hold_id = r.json()["hold_id"]
    blocked = post(app_server, "/v1/erasure-requests", "privacy_officer", {"user_id": CANARY})
    done = post(app_server, "/v1/erasure-requests", "privacy_officer", {"user_id": "someone-else"})
    assert (blocked.json()["state"], done.json()["state"]) == ("blocked", "done")

    def listed(query: str = "") -> list[dict[str, Any]]:
        r = get(app_server, f"/v1/erasure-requests{query}", "privacy_officer")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].split(";")[0] == "application/json"
        assert CANARY not in r.text
        requests: list[dict[str, Any]] = r.json()["erasure_requests"]
        return requests

    (only_blocked,) = listed("?state=blocked")
    assert only_blocked["request_id"] == blocked.json()["request_id"]
    assert only_blocked["blocked_by"] == [hold_id]
    assert only_blocked["requested_by"] == "p-privacy_officer"
    assert only_blocked["categories"] is None
    assert len(only_blocked["subject_ref"]) == 64
    assert only_blocked["last_op_seq"] == blocked.json()["recorded_as_seq"]
    assert done.json()["request_id"] in {r["request_id"] for r in listed("?state=done")}
    assert listed("?state=pending") == []
    everything = listed()
    assert {blocked.json()["request_id"], done.json()["request_id"]} <= {
        r["request_id"] for r in everything
    }
    assert everything == sorted(everything, key=lambda r: r["requested_at"], reverse=True)
