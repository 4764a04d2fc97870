"""Legal holds and erasure in the console, in process, on both backends (issue #14): the same
use cases and role rules as ``/v1/legal-holds`` and ``/v1/erasure-requests``, CSRF on every
change, identifiers only in POST bodies, and a hold keeping an erasure from its records until
its release resumes it (the erasure page lists the requests, pending, blocked or done).
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.support.api import open_ledger
from tests.support.console import Browser, browser, signed_in
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()
PRIVACY = "data_privacy_events"


def _privacy_event(server: InProcessServer, user_id: str) -> int:
    response = server.post(
        "/v1/events", json=event(PRIVACY, user_id=user_id), headers=server.headers("writer")
    )
    assert response.status_code == 201, response.text
    return int(response.json()["seq"])


def _holds(server: InProcessServer) -> list[str]:
    with open_ledger(server.settings) as ledger:
        return [h.hold_id for h in ledger.holds.all()]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/console/holds", {"admin", "compliance_officer"}),
        ("/console/erasure", {"privacy_officer"}),
    ],
)
def test_pages_are_gated_by_the_apis_roles(
    server: InProcessServer, path: str, allowed: set[str]
) -> None:
    for role in ("compliance_officer", "privacy_officer", "security_team", "auditor", "admin"):
        with signed_in(server, role) as b:
            expected = 200 if role in allowed else 403
            assert b.get(path).status_code == expected, (role, path)
            nav = b.get("/console/status").text
            assert (f'href="{path}"' in nav) == (role in allowed), (role, path)


def test_a_change_without_the_right_role_or_csrf_changes_nothing(server: InProcessServer) -> None:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    seq = _privacy_event(server, user_id)
    before = _holds(server)
    with signed_in(server, "auditor") as auditor:
        csrf = auditor.csrf()
        hold = auditor.post("/console/holds", {"csrf": csrf, "scope": "subject", "value": user_id})
        assert hold.status_code == 403
        erase = auditor.post(
            "/console/erasure", {"csrf": csrf, "user_id": user_id, "confirm": "yes"}
        )
        assert erase.status_code == 403
    with signed_in(server, "compliance_officer") as officer:
        no_csrf = officer.post("/console/holds", {"scope": "subject", "value": user_id})
        assert no_csrf.status_code == 403
    with signed_in(server, "privacy_officer") as privacy:
        no_csrf = privacy.post("/console/erasure", {"user_id": user_id, "confirm": "yes"})
        assert no_csrf.status_code == 403
        unconfirmed = privacy.post("/console/erasure", {"csrf": privacy.csrf(), "user_id": user_id})
        assert unconfirmed.status_code == 422
        assert user_id not in unconfirmed.text
        assert "present" in privacy.get(f"/console/records/{seq}").text
    assert _holds(server) == before


def _request_row(page: str, request_id: str) -> tuple[str, str] | None:
    """(state, blocking holds) of a request in the erasure page's list, None if not listed."""
    row = re.search(
        rf'<tr class="erasure-request erasure-\w+">\s*<td><code>{request_id}</code></td>\s*'
        r"<td>(\w+)</td>\s*<td>(.*?)</td>",
        page,
    )
    if row is None:
        return None
    return row.group(1), re.sub(r"</?code>", "", row.group(2))


def _place_hold(b: Browser, user_id: str) -> str:
    response = b.post(
        "/console/holds",
        {"csrf": b.csrf("/console/holds"), "scope": "subject", "value": user_id, "reason": "case"},
    )
    assert response.status_code == 201, response.text
    assert user_id not in response.text  # the hold shows the blind index, not the identifier
    match = re.search(r"Hold <code>([^<]+)</code> placed", response.text)
    assert match
    return match.group(1)


def test_a_hold_keeps_an_erasure_from_its_subject_until_released(server: InProcessServer) -> None:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    seq = _privacy_event(server, user_id)
    with (
        signed_in(server, "compliance_officer") as officer,
        signed_in(server, "privacy_officer") as privacy,
    ):
        hold_id = _place_hold(officer, user_id)
        erase = {"csrf": privacy.csrf("/console/erasure"), "user_id": user_id, "confirm": "yes"}
        held = privacy.post("/console/erasure", erase)
        assert held.status_code == 201, held.text
        assert hold_id in held.text
        # payloads erased 0, then the seq ranges, then held and skipped 1
        assert re.search(rf"<td>{PRIVACY}</td><td>0</td><td>.*?</td><td>1</td>", held.text)
        assert user_id not in held.text
        request_id = re.search(
            r"Request <code>(erasure_[0-9a-f]+)</code> is <strong>blocked", held.text
        )
        assert request_id, held.text
        assert "present" in privacy.get(f"/console/records/{seq}").text
        blocked = privacy.get("/console/erasure?state=blocked").text
        assert _request_row(blocked, request_id.group(1)) == ("blocked", hold_id)
        assert (
            _request_row(privacy.get("/console/erasure?state=done").text, request_id.group(1))
            is None
        )

        released = officer.post(
            f"/console/holds/{hold_id}/release",
            {"csrf": officer.csrf("/console/holds"), "reason": "case closed"},
        )
        assert released.status_code == 303
        listing = officer.get("/console/holds").text
        assert re.search(rf"{hold_id}</code>.*?released", listing, re.S)
        again = officer.post(
            f"/console/holds/{hold_id}/release", {"csrf": officer.csrf("/console/holds")}
        )
        assert again.status_code == 404

        # The release resumed the erasure: the record is erased and the request done.
        record = privacy.get(f"/console/records/{seq}")
        assert "state-erased" in record.text
        assert 'id="plaintext"' not in record.text
        done = privacy.get("/console/erasure?state=done").text
        assert _request_row(done, request_id.group(1)) == ("done", "")
        assert _request_row(privacy.get("/console/erasure").text, request_id.group(1)) == (
            "done",
            "",
        )
        assert (
            _request_row(privacy.get("/console/erasure?state=blocked").text, request_id.group(1))
            is None
        )
        assert user_id not in done
        bad_state = privacy.get("/console/erasure?state=cancelled")
        assert bad_state.status_code == 422
        assert "cancelled" not in bad_state.text

        again = privacy.post("/console/erasure", erase)
        assert again.status_code == 201
        assert re.search(rf"<td>{PRIVACY}</td><td>0</td>", again.text)
        assert "is <strong>done</strong>" in again.text


def test_an_admin_adds_and_revokes_a_principal(server: InProcessServer) -> None:
    name = f"officer-{uuid.uuid4().hex[:6]}"
    with signed_in(server, "compliance_officer") as officer:
        assert officer.get("/console/principals").status_code == 403
        forged = officer.post(
            "/console/principals",
            {"csrf": officer.csrf(), "name": name, "role.admin": "yes"},
        )
        assert forged.status_code == 403
    with signed_in(server, "admin") as admin:
        assert admin.get("/console/").headers["location"] == "/console/principals"
        csrf = admin.csrf("/console/principals")
        assert admin.post("/console/principals", {"name": name}).status_code == 403  # no CSRF
        added = admin.post(
            "/console/principals", {"csrf": csrf, "name": name, "role.compliance_officer": "yes"}
        )
        assert added.status_code == 201, added.text
        token = re.search(r'<code id="new-token">([^<]+)</code>', added.text)
        assert token
        assert added.headers["cache-control"] == "no-store"
        with browser(server) as newcomer:
            assert newcomer.sign_in(token.group(1)).status_code == 303
            assert newcomer.get("/console/search").status_code == 200
            revoked = admin.post(f"/console/principals/{name}/revoke", {"csrf": csrf})
            assert revoked.status_code == 303
            assert newcomer.get("/console/search").status_code == 303  # session ended
        listing = admin.get("/console/principals").text
        assert token.group(1) not in listing
        assert re.search(rf"<td>{name}</td>.*?revoked", listing, re.S)
        duplicate = admin.post(
            "/console/principals", {"csrf": csrf, "name": name, "role.auditor": "yes"}
        )
        assert duplicate.status_code == 409
        assert "already exists" in duplicate.text
        assert duplicate.headers["x-frame-options"] == "DENY"  # an HTML page, not problem+json
