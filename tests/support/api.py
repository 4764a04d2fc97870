"""Helpers for HTTP tests: problem+json checks, the categories and their readers, and a
ledger opened in the test process on a server's database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import func, select

from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.schema import entries

PROBLEM_JSON = "application/problem+json"
CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")
READER_OF = {
    "financial_transactions": "compliance_officer",
    "data_privacy_events": "privacy_officer",
    "security_events": "security_team",
    "ledger_operations": "security_team",
}


@contextmanager
def open_ledger(settings: Settings) -> Iterator[Ledger]:
    """An in-process ledger on the server's database (reads through it record nothing)."""
    ledger = Ledger.open(settings)
    try:
        yield ledger
    finally:
        ledger.close()


def records_read_count(ledger: Ledger, event_type: str = "records_read") -> int:
    """Number of ``records_read`` (or ``event_type``, e.g. ``read_refused``) entries in
    ``ledger_operations``."""
    stmt = (
        select(func.count())
        .select_from(entries)
        .where(entries.c.category == "ledger_operations", entries.c.event_type == event_type)
    )
    with ledger.store.reader() as conn:
        return int(conn.execute(stmt).scalar_one())


def assert_problem(response: httpx.Response, status: int, *, secrets: tuple[str, ...] = ()) -> None:
    """``response`` is an RFC 9457 problem with ``status`` that echoes none of ``secrets``."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, where
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status, body
    assert isinstance(body["type"], str), body
    assert body["type"], body
    assert isinstance(body["detail"], str), body
    if status == 422:
        assert body.get("errors"), body
        assert all(isinstance(e, dict) and isinstance(e.get("field"), str) for e in body["errors"])
    if status == 401:
        assert response.headers.get("www-authenticate", "").startswith("Bearer"), where
    else:
        assert "www-authenticate" not in response.headers, where
    if status == 503:
        assert response.headers.get("retry-after", "").isdigit(), where
    for secret in secrets:
        assert secret not in response.text, f"{where} echoes a submitted value"
        assert secret.lower() not in response.text.lower(), f"{where} echoes a submitted value"


#: Who may get a 2xx from each operation (DESIGN §4), by role; ``None``: public, ``"*"``: any
#: principal. Reads are narrowed further by category (tests/integration/api/test_matrix.py).
READERS = frozenset({"compliance_officer", "privacy_officer", "security_team", "auditor"})
OPERATION_ROLES: dict[str, frozenset[str] | str | None] = {
    "POST /v1/events": frozenset({"writer"}),
    "POST /v1/events/batch": frozenset({"writer"}),
    "GET /v1/events": READERS,
    "POST /v1/events/search": READERS,
    "GET /v1/events/{seq}": READERS,
    "GET /v1/log/checkpoint": "*",
    "GET /v1/log/verifier-key": None,
    "GET /v1/log/leaves": frozenset({"auditor"}),
    "GET /v1/log/proof/inclusion": frozenset({"auditor"}),
    "GET /v1/log/proof/consistency": frozenset({"auditor"}),
    "GET /v1/log/proof/bundle": frozenset({"auditor"}),
    # /tlog/ is the auditor's unless AUDIT_LEDGER_TILES_PUBLIC (tests/integration/api/test_tiles.py)
    "GET /tlog/checkpoint": frozenset({"auditor"}),
    "GET /tlog/tile/{path}": frozenset({"auditor"}),
    "POST /v1/erasure-requests": frozenset({"privacy_officer"}),
    "GET /v1/erasure-requests": frozenset({"privacy_officer"}),
    "POST /v1/legal-holds": frozenset({"admin", "compliance_officer"}),
    "GET /v1/legal-holds": frozenset({"admin", "compliance_officer"}),
    "POST /v1/legal-holds/{hold_id}/release": frozenset({"admin", "compliance_officer"}),
    "GET /healthz": None,
    "GET /readyz": None,
    "GET /metrics": None,
}
