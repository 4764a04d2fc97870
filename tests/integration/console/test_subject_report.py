"""The console's subject report (issue #14), in process, on both backends: a user id posted in
a form lists that subject's entries in the categories the role reads in plaintext, with their
payload state, and the active legal holds that cover them; each report page is recorded as a
read like ``POST /v1/events/search``, and roles without personal data get no page."""

from __future__ import annotations

import re
import uuid

from tests.support.api import CATEGORIES, READER_OF, open_ledger, records_read_count
from tests.support.console import signed_in
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()
PRIVACY = "data_privacy_events"
_ROW = re.compile(
    r'<tr class="subject-record">\s*<td><a href="/console/records/(\d+)">\d+</a></td>\s*'
    r"<td>([a-z_]+)</td>\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>\s*"
    r'<td><span class="state state-(\w+)">'
)
_HOLD = re.compile(r'<tr class="subject-hold">\s*<td><code>(hold_[0-9a-f]+)</code>')


def _append(server: InProcessServer, category: str, user_id: str) -> int:
    response = server.post(
        "/v1/events", json=event(category, user_id=user_id), headers=server.headers("writer")
    )
    assert response.status_code == 201, response.text
    return int(response.json()["seq"])


def _report(server: InProcessServer, role: str, user_id: str) -> tuple[int, str]:
    with signed_in(server, role) as b:
        page = b.post("/console/subject", {"csrf": b.csrf("/console/subject"), "user_id": user_id})
        return page.status_code, page.text


def test_each_reader_sees_the_subjects_records_it_may_read(server: InProcessServer) -> None:
    user_id = f"subj-{uuid.uuid4().hex[:8]}"
    seqs = {category: _append(server, category, user_id) for category in CATEGORIES}
    other = _append(server, PRIVACY, f"other-{uuid.uuid4().hex[:8]}")
    for category in CATEGORIES:
        role = READER_OF[category]
        with open_ledger(server.settings) as ledger:
            before = records_read_count(ledger)
            status, text = _report(server, role, user_id)
            assert status == 200, text
            assert records_read_count(ledger) == before + 1  # recorded as one read
        rows = _ROW.findall(text)
        readable = {c for c in CATEGORIES if READER_OF[c] == role}
        assert {(int(r[0]), r[1]) for r in rows} == {(seqs[c], c) for c in readable}, role
        assert all(r[4] == "present" for r in rows)
        assert str(other) not in {r[0] for r in rows}
        assert "subject-hold" not in text


def test_payload_states_and_the_holds_that_cover_the_subject(server: InProcessServer) -> None:
    user_id = f"subj-{uuid.uuid4().hex[:8]}"
    erased = _append(server, PRIVACY, user_id)
    with open_ledger(server.settings) as ledger:
        ledger.erasure.erase_subject(user_id, actor="test")
        kept = _append(server, PRIVACY, user_id)  # after the erasure: present
        subject = ledger.holds.create("subject", value=user_id, actor="test")
        released = ledger.holds.create("subject", value=user_id, actor="test")
        ledger.holds.release(released.hold_id, actor="test")
        stranger = ledger.holds.create("subject", value=f"x-{user_id}", actor="test")
        category = ledger.holds.create("category", value=PRIVACY, actor="test")
        elsewhere = ledger.holds.create("category", value="security_events", actor="test")
    status, text = _report(server, "privacy_officer", user_id)
    assert status == 200, text
    states = {int(r[0]): r[4] for r in _ROW.findall(text)}
    assert states == {erased: "erased", kept: "present"}
    shown = set(_HOLD.findall(text))
    assert {subject.hold_id, category.hold_id} <= shown
    assert not {released.hold_id, stranger.hold_id, elsewhere.hold_id} & shown
    with open_ledger(server.settings) as ledger:
        ledger.holds.release(category.hold_id, actor="test")
        ledger.holds.release(elsewhere.hold_id, actor="test")


def test_the_page_is_for_roles_that_read_personal_data(server: InProcessServer) -> None:
    allowed = {"compliance_officer", "privacy_officer", "security_team"}
    for role in ("compliance_officer", "privacy_officer", "security_team", "auditor", "admin"):
        with signed_in(server, role) as b:
            expected = 200 if role in allowed else 403
            assert b.get("/console/subject").status_code == expected, role
            nav = b.get("/console/status").text
            assert ('href="/console/subject"' in nav) == (role in allowed), role
            if role not in allowed:
                refused = b.post("/console/subject", {"csrf": b.csrf(), "user_id": "u-1"})
                assert refused.status_code == 403, role
                assert "u-1" not in refused.text


def test_the_user_id_is_required_and_travels_in_the_body_only(server: InProcessServer) -> None:
    with signed_in(server, "privacy_officer") as b:
        csrf = b.csrf("/console/subject")
        assert b.post("/console/subject", {"csrf": "forged", "user_id": "u-1"}).status_code == 403
        assert b.post("/console/subject", {"csrf": csrf, "user_id": " "}).status_code == 422
        page = b.get("/console/subject").text
        assert 'method="post" action="/console/subject"' in page
        assert "?user_id" not in page


_ERASURE = re.compile(
    r'<tr class="subject-erasure">\s*<td><code>(erasure_[0-9a-f]+)</code></td>\s*'
    r"<td>(\w+)</td>\s*<td>(.*?)</td>"
)


def test_a_privacy_officer_sees_the_subjects_open_erasures(server: InProcessServer) -> None:
    user_id = f"subj-{uuid.uuid4().hex[:8]}"
    _append(server, PRIVACY, user_id)
    with open_ledger(server.settings) as ledger:
        hold = ledger.holds.create("subject", value=user_id, actor="test")
        blocked = ledger.erasure.erase_subject(user_id, actor="test")
        ledger.erasure.erase_subject(f"x-{user_id}", actor="test")  # someone else's: done
    assert blocked.state == "blocked"
    status, text = _report(server, "privacy_officer", user_id)
    assert status == 200, text
    shown = [(r[0], r[1], re.sub(r"</?code>", "", r[2])) for r in _ERASURE.findall(text)]
    assert shown == [(blocked.request_id, "blocked", hold.hold_id)]
    # The compliance officer reads other categories of the subject but lists no erasures (as
    # GET /v1/erasure-requests is the privacy officer's).
    status, text = _report(server, "compliance_officer", user_id)
    assert status == 200, text
    assert "subject-erasure" not in text
    assert "Erasure requests" not in text

    with open_ledger(server.settings) as ledger:
        ledger.holds.release(hold.hold_id, actor="test")  # resumes it: done, no longer open
    status, text = _report(server, "privacy_officer", user_id)
    assert _ERASURE.findall(text) == []
    assert "No pending or blocked erasure of this subject." in text
