"""Rotating a principal's token in place from the console (issue #14), in process, on both
backends: the same use case as ``audit-ledger principals rotate``, CSRF-checked, admin only,
the new token shown once; the old token stops working and the writer name stays."""

from __future__ import annotations

import re
import uuid

from tests.support.api import open_ledger
from tests.support.console import browser, signed_in
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()
_TOKEN = re.compile(r'<code id="new-token">([^<]+)</code>')


def _append(server: InProcessServer, token: str) -> int:
    response = server.post(
        "/v1/events",
        json=event("financial_transactions"),
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code if response.status_code != 201 else int(response.json()["seq"])


def test_an_admin_rotates_a_writers_token_in_place(server: InProcessServer) -> None:
    name = f"writer-{uuid.uuid4().hex[:6]}"
    with open_ledger(server.settings) as ledger:
        old = ledger.principals.add(name, ["writer"])
    before = _append(server, old)
    with signed_in(server, "admin") as admin:
        csrf = admin.csrf("/console/principals")
        assert (
            f'action="/console/principals/{name}/rotate"' in admin.get("/console/principals").text
        )
        assert admin.post(f"/console/principals/{name}/rotate", {"csrf": "x"}).status_code == 403
        assert _append(server, old) > before  # a refused rotation changed nothing
        rotated = admin.post(f"/console/principals/{name}/rotate", {"csrf": csrf})
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        match = _TOKEN.search(rotated.text)
        assert match
        new = match.group(1)
        assert new != old
        assert old not in rotated.text
        assert new not in admin.get("/console/principals").text  # shown once
        unknown = admin.post("/console/principals/nobody-here/rotate", {"csrf": csrf})
        assert unknown.status_code == 404
    # The old token is refused at once (its hash is retired in the chain), the new one works.
    assert _append(server, old) == 401
    seq = _append(server, new)
    assert seq > before
    with open_ledger(server.settings) as ledger:
        assert ledger.principals.authenticate(new).name == name
        rows = {p.name: p for p in ledger.principals.all()}
        assert rows[name].revoked_at is None
        assert list(rows[name].roles) == ["writer"]
    read = server.get(f"/v1/events/{seq}", headers=server.headers("compliance_officer"))
    assert read.status_code == 200, read.text
    assert name in read.text  # the writer name in the new entry's header is unchanged


def test_only_an_admin_may_rotate(server: InProcessServer) -> None:
    name = f"auditor-{uuid.uuid4().hex[:6]}"
    with open_ledger(server.settings) as ledger:
        token = ledger.principals.add(name, ["auditor"])
    with signed_in(server, "compliance_officer") as officer:
        forged = officer.post(f"/console/principals/{name}/rotate", {"csrf": officer.csrf()})
        assert forged.status_code == 403
        assert not _TOKEN.search(forged.text)
    with browser(server) as b:
        assert b.sign_in(token).status_code == 303  # still the same token
