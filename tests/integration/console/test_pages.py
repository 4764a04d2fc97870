"""The compliance console over HTTP, in process, on both backends (issue #14, DESIGN §8).

Sign-in and its cookie, CSRF refusal, the security headers on every response, role gating
through the pages (a compliance officer cannot reach privacy records by editing the URL or the
form; the auditor never gets plaintext), reads recorded like the API's, sign-out and
revocation ending a session. The rules themselves are the ledger's and covered by the API
tests; these check that the console reaches them and adds no way around them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx
import pytest

from audit_ledger.console import pages
from audit_ledger.core.merkle import root_from_inclusion_proof
from tests.support.api import CATEGORIES, open_ledger, records_read_count
from tests.support.console import SECURITY_HEADERS, browser, signed_in
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()


@dataclass(frozen=True)
class Seeded:
    server: InProcessServer
    seq_of: dict[str, int]
    canary_of: dict[str, str]
    user_id: str
    event_id_of: dict[str, str]


@pytest.fixture(scope="module")
def seeded(server: InProcessServer) -> Seeded:
    """One event per category with a unique string in its data, and a checkpoint over them."""
    user_id = f"user-{uuid.uuid4().hex[:10]}"
    seq_of, canary_of, event_id_of = {}, {}, {}
    for category in CATEGORIES:
        canary = f"canary-{category[:4]}-{uuid.uuid4().hex[:12]}"
        body = event(category, user_id=user_id)
        body["data"]["note"] = canary
        response = server.post("/v1/events", json=body, headers=server.headers("writer"))
        assert response.status_code == 201, response.text
        seq_of[category] = response.json()["seq"]
        canary_of[category] = canary
        event_id_of[category] = body["event_id"]
    with open_ledger(server.settings) as ledger:
        assert ledger.log.checkpoint() is not None
    return Seeded(server, seq_of, canary_of, user_id, event_id_of)


def _cookie_attributes(response: httpx.Response, name: str) -> list[str]:
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    return [part.strip().lower() for part in headers[0].split(";")]


def _assert_secured(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, where
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp, where
    assert "frame-ancestors 'none'" in csp, where
    assert "unsafe-inline" not in csp, where
    assert "<script" not in response.text, where


# --- sign-in ----------------------------------------------------------------------------------


def test_sign_in_exchanges_the_token_for_a_strict_session_cookie(seeded: Seeded) -> None:
    server = seeded.server
    token = server.tokens["compliance_officer"]
    with browser(server) as b:
        assert b.get("/console/search").headers["location"] == "/console/sign-in"
        response = b.sign_in(token)
        assert response.status_code == 303, response.text
        attributes = _cookie_attributes(response, "al_console")
        assert {"httponly", "samesite=strict", "path=/console/"} <= set(attributes)
        assert "secure" not in attributes  # loopback over plain HTTP (development)
        assert token not in response.headers.get("set-cookie", "")
        page = b.get("/console/search")
        assert page.status_code == 200
        assert "p-compliance_officer" in page.text


def test_the_cookie_is_secure_off_loopback(seeded: Seeded) -> None:
    with browser(seeded.server, client_host="203.0.113.9") as b:
        form = b.get("/console/sign-in")
        assert "secure" in _cookie_attributes(form, "al_console_pre")
        # The Secure pre-sign-in cookie is not sent back over plain HTTP: sign-in is refused.
        refused = b.post(
            "/console/sign-in", {"csrf": "x", "token": seeded.server.tokens["auditor"]}
        )
        assert refused.status_code == 403


def test_a_wrong_token_is_refused_without_echo(seeded: Seeded) -> None:
    wrong = "alt_" + "Z" * 43
    with browser(seeded.server) as b:
        response = b.sign_in(wrong)
        assert response.status_code == 401
        assert wrong not in response.text
        assert "al_console=" not in response.headers.get("set-cookie", "")
        revoked = b.sign_in(seeded.server.tokens["revoked"])
        assert revoked.status_code == 401


def test_sign_in_needs_the_forms_own_csrf_value(seeded: Seeded) -> None:
    token = seeded.server.tokens["auditor"]
    with browser(seeded.server) as b:
        b.get("/console/sign-in")  # the pre-sign-in cookie is set, but the field is wrong
        response = b.post("/console/sign-in", {"csrf": "forged", "token": token})
        assert response.status_code == 403
        assert token not in response.text
    with browser(seeded.server) as b:  # no cookie at all: a cross-site form post
        response = b.post("/console/sign-in", {"csrf": "forged", "token": token})
        assert response.status_code == 403
    with browser(seeded.server) as b:  # non-ASCII: a refusal, not a compare_digest TypeError
        b.get("/console/sign-in")
        response = b.post("/console/sign-in", {"csrf": "é" * 32, "token": token})
        assert response.status_code == 403


def test_the_writer_has_no_console(seeded: Seeded) -> None:
    with browser(seeded.server) as b:
        response = b.sign_in(seeded.server.tokens["writer"])
        assert response.status_code == 403
        assert "al_console=" not in response.headers.get("set-cookie", "")


# --- headers and CSRF -------------------------------------------------------------------------


def test_every_console_response_carries_the_security_headers(seeded: Seeded) -> None:
    seq = seeded.seq_of["financial_transactions"]
    with browser(seeded.server) as anonymous:
        _assert_secured(anonymous.get("/console/sign-in"))
        _assert_secured(anonymous.get("/console/search"))  # the redirect too
        _assert_secured(anonymous.get("/console/static/console.css"))
        _assert_secured(anonymous.get("/console/static/nope.js"))
    with signed_in(seeded.server, "compliance_officer") as b:
        for path in ("/console/search", "/console/status", f"/console/records/{seq}"):
            response = b.get(path)
            assert response.status_code == 200, (path, response.text)
            _assert_secured(response)
        _assert_secured(b.search(category="financial_transactions"))
        _assert_secured(b.post("/console/search", {"csrf": "wrong"}))
        _assert_secured(b.get("/console/records/99999999"))
        _assert_secured(b.get("/console/records/abc"))


def test_a_post_without_this_sessions_csrf_token_is_refused(seeded: Seeded) -> None:
    with (
        signed_in(seeded.server, "compliance_officer") as b,
        signed_in(seeded.server, "compliance_officer") as other,
        open_ledger(seeded.server.settings) as ledger,
    ):
        before = records_read_count(ledger)
        for csrf in (None, "", "0" * 64, other.csrf(), "é" * 64):
            data = {"category": "financial_transactions"}
            if csrf is not None:
                data["csrf"] = csrf
            response = b.post("/console/search", data)
            assert response.status_code == 403, csrf
            assert "CSRF" in response.text
        assert records_read_count(ledger) == before  # refused before anything was read
        assert b.search(category="financial_transactions").status_code == 200
        assert records_read_count(ledger) == before + 1  # one recorded read, like the API's


def test_a_json_or_repeated_field_form_is_refused(seeded: Seeded) -> None:
    with signed_in(seeded.server, "compliance_officer") as b:
        csrf = b.csrf()
        as_json = b.request("POST", "/console/search", json={"csrf": csrf})
        assert as_json.status_code == 422
        repeated = b.request(
            "POST",
            "/console/search",
            content=f"csrf={csrf}&category=a&category=b",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert repeated.status_code == 422


# --- what each role sees ----------------------------------------------------------------------


def test_an_officer_reads_its_category_in_plaintext(seeded: Seeded) -> None:
    seq = seeded.seq_of["financial_transactions"]
    canary = seeded.canary_of["financial_transactions"]
    with signed_in(seeded.server, "compliance_officer") as b:
        results = b.search(category="financial_transactions", user_id=seeded.user_id)
        assert results.status_code == 200
        assert f'href="/console/records/{seq}"' in results.text
        page = b.get(f"/console/records/{seq}")
        assert page.status_code == 200
        assert canary in page.text
        assert "Inclusion proof" in page.text
        assert "tree size" in page.text


def test_a_compliance_officer_cannot_reach_privacy_records(seeded: Seeded) -> None:
    privacy_seq = seeded.seq_of["data_privacy_events"]
    canary = seeded.canary_of["data_privacy_events"]
    with signed_in(seeded.server, "compliance_officer") as b:
        search = b.get("/console/search")
        assert "data_privacy_events" not in search.text  # not offered
        forged = b.search(category="data_privacy_events")  # an edited form field
        assert forged.status_code == 403
        edited = b.get(f"/console/records/{privacy_seq}")  # an edited URL
        assert edited.status_code == 403
        everything = b.search(user_id=seeded.user_id)  # no category: only its own
        assert everything.status_code == 200
        assert f"/console/records/{privacy_seq}" not in everything.text
        for response in (forged, edited, everything):
            assert canary not in response.text


def test_the_auditor_never_gets_plaintext(seeded: Seeded) -> None:
    with signed_in(seeded.server, "auditor") as b:
        results = b.search()
        assert results.status_code == 200
        pages = [results]
        for category in CATEGORIES:
            seq = seeded.seq_of[category]
            assert f'href="/console/records/{seq}"' in results.text
            page = b.get(f"/console/records/{seq}")
            assert page.status_code == 200
            assert "withheld" in page.text
            assert "Inclusion proof" in page.text
            pages.append(page)
        for page in pages:
            for canary in seeded.canary_of.values():
                assert canary not in page.text
            assert 'id="plaintext"' not in page.text


def test_identifiers_never_travel_in_a_url(seeded: Seeded) -> None:
    with signed_in(seeded.server, "auditor") as b:
        results = b.search(user_id=seeded.user_id, limit="1")
        assert results.status_code == 200
        hrefs = re.findall(r'(?:href|action)="([^"]*)"', results.text)
        assert hrefs
        assert not [h for h in hrefs if seeded.user_id in h]
        assert "Next page" in results.text  # paging is a POST form carrying the filters
        assert 'method="post"' in results.text


def test_the_record_pages_inclusion_proof_verifies(seeded: Seeded) -> None:
    """The hashes on the page lead from the leaf hash on the page to the checkpoint's root
    (RFC 9162 §2.1.3.2), recomputed here by the pure tree code."""
    seq = seeded.seq_of["data_privacy_events"]
    with signed_in(seeded.server, "auditor") as b:
        page = b.get(f"/console/records/{seq}").text
    leaf = re.search(r"<dt>Leaf hash</dt><dd><code>([0-9a-f]{64})</code>", page)
    size_root = re.search(r"tree size (\d+), root <code>([0-9a-f]{64})</code>", page)
    hashes = re.findall(r"<li><code>([0-9a-f]{64})</code></li>", page)
    assert leaf
    assert size_root
    assert hashes
    size, root = int(size_root.group(1)), bytes.fromhex(size_root.group(2))
    proof = [bytes.fromhex(h) for h in hashes]
    assert root_from_inclusion_proof(seq, size, bytes.fromhex(leaf.group(1)), proof) == root
    tampered = [bytes(32), *proof[1:]]  # and a changed hash does not
    assert root_from_inclusion_proof(seq, size, bytes.fromhex(leaf.group(1)), tampered) != root


def test_chain_status_shows_the_checkpoint(seeded: Seeded) -> None:
    with signed_in(seeded.server, "auditor") as b, open_ledger(seeded.server.settings) as led:
        checkpoint = led.log.latest_checkpoint()
        assert checkpoint is not None
        page = b.get("/console/status")
        assert page.status_code == 200
        assert checkpoint.root_hash.hex() in page.text
        assert "No witnesses are configured." in page.text


def _result_seqs(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [int(s) for s in re.findall(r'<td><a href="/console/records/(\d+)">', response.text)]


def _next_page_form(response: httpx.Response) -> dict[str, str]:
    form = response.text.split('<h2 id="results"')[1]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))


def test_search_newest_first_pages_through_the_subjects_records(seeded: Seeded) -> None:
    mine = sorted(seeded.seq_of.values())
    with signed_in(seeded.server, "auditor") as b:
        oldest = _result_seqs(b.search(user_id=seeded.user_id))
        assert oldest == mine
        seen: list[int] = []
        response = b.search(user_id=seeded.user_id, order="newest", limit="1")
        while True:
            seen += _result_seqs(response)
            if "Next page" not in response.text:
                break
            response = b.post("/console/search", _next_page_form(response))
        assert seen == sorted(mine, reverse=True)


def _matches(response: httpx.Response) -> str:
    heading = re.search(r'<h2 id="results">(.*?)</h2>', response.text, re.S)
    assert heading is not None, response.text
    return heading.group(1)


def test_a_search_says_how_many_records_match(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first page counts the matches (the subject's three records, one per category, for
    the auditor; its own category's one for an officer); the count stops at the cap, which it
    then names, and a next page carries on without counting again."""
    with signed_in(seeded.server, "auditor") as b:
        first = b.search(user_id=seeded.user_id, limit="1")
        assert _matches(first) == "3 matching records: 1 on this page, more follow"
        later = b.post("/console/search", _next_page_form(first))
        assert _matches(later) == "1 on this page, more follow"
        monkeypatch.setattr(pages, "MATCH_CAP", 2)
        capped = b.search(user_id=seeded.user_id, limit="1")
        assert _matches(capped) == "More than 2 matching records: 1 on this page, more follow"
        assert (
            _matches(b.search(event_id=str(uuid.uuid4()))) == "0 matching records: 0 on this page"
        )
    with signed_in(seeded.server, "compliance_officer") as b:
        mine = b.search(user_id=seeded.user_id)
        assert _matches(mine) == "1 matching record: 1 on this page"


def test_search_by_event_id_and_recorded_at(seeded: Seeded) -> None:
    privacy = "data_privacy_events"
    with signed_in(seeded.server, "auditor") as b:
        found = b.search(event_id=seeded.event_id_of[privacy])
        assert _result_seqs(found) == [seeded.seq_of[privacy]]
        since = b.search(user_id=seeded.user_id, recorded_since="2000-01-01T00:00:00Z")
        assert _result_seqs(since) == sorted(seeded.seq_of.values())
        for bounds in (
            {"recorded_since": "2999-01-01T00:00:00Z"},
            {"recorded_until": "2000-01-01T00:00:00Z"},
        ):
            assert _result_seqs(b.search(user_id=seeded.user_id, **bounds)) == []
    with signed_in(seeded.server, "compliance_officer") as b:  # another category's event id
        assert _result_seqs(b.search(event_id=seeded.event_id_of[privacy])) == []


def test_bad_search_fields_are_named_and_not_echoed(seeded: Seeded) -> None:
    with signed_in(seeded.server, "auditor") as b:
        for field, value in (
            ("recorded_since", "yesterday-xq7"),
            ("since", "soon-xq7"),
            ("order", "sideways-xq7"),
            ("limit", "many-xq7"),
            ("event_id", "e" * 37),
            ("cursor", "bogus-xq7"),
        ):
            response = b.search(**{field: value})
            assert response.status_code == 422, (field, response.text)
            assert f"<code>{field}</code>" in response.text
            assert value not in response.text
            _assert_secured(response)


def test_an_unknown_console_path_is_an_html_404(seeded: Seeded) -> None:
    with browser(seeded.server) as b:
        response = b.get("/console/no/such/page")
        assert response.status_code == 404
        _assert_secured(response)


def test_the_access_trail_shows_who_read_what(seeded: Seeded) -> None:
    seq = seeded.seq_of["financial_transactions"]
    with signed_in(seeded.server, "compliance_officer") as officer:
        assert officer.get(f"/console/records/{seq}").status_code == 200
        assert officer.get("/console/access").status_code == 403  # not its category
    with signed_in(seeded.server, "security_team") as security:
        trail = security.get("/console/access")
        assert trail.status_code == 200
        rows = re.findall(r"<tr>(.*?)</tr>", trail.text, re.S)
        newest = next(r for r in rows if "GET /console/records/{seq}" in r)
        assert "p-compliance_officer" in newest
        assert f'<code class="seqs">{seq}</code>' in newest  # exact seqs, as ranges
        older = security.post("/console/access", {"csrf": "wrong"})
        assert older.status_code == 403
    with signed_in(seeded.server, "auditor") as auditor:
        headers_only = auditor.get("/console/access")
        assert headers_only.status_code == 200
        assert "withheld" in headers_only.text
        assert "p-compliance_officer" not in headers_only.text


# --- ending a session -------------------------------------------------------------------------


def test_sign_out_ends_the_session_even_for_a_copied_cookie(seeded: Seeded) -> None:
    with signed_in(seeded.server, "auditor") as b, browser(seeded.server) as thief:
        cookie = b.client.cookies["al_console"]
        thief.client.cookies.set("al_console", cookie, path="/console/")
        assert thief.get("/console/search").status_code == 200  # a copy works until...
        refused = b.post("/console/sign-out", {"csrf": "wrong"})
        assert refused.status_code == 403
        out = b.post("/console/sign-out", {"csrf": b.csrf()})
        assert out.status_code == 303
        assert out.headers["location"] == "/console/sign-in"
        assert "max-age=0" in _cookie_attributes(out, "al_console")
        assert b.get("/console/search").status_code == 303
        assert thief.get("/console/search").status_code == 303  # ...the owner signs out


def test_revoking_the_principal_ends_its_sessions(seeded: Seeded) -> None:
    name = f"p-{uuid.uuid4().hex[:8]}"
    with open_ledger(seeded.server.settings) as ledger:
        token = ledger.principals.add(name, ["auditor"])
    with browser(seeded.server) as b:
        assert b.sign_in(token).status_code == 303
        assert b.get("/console/status").status_code == 200
        with open_ledger(seeded.server.settings) as ledger:
            ledger.principals.revoke(name)
        response = b.get("/console/status")
        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in"


def test_a_tampered_cookie_is_no_session(seeded: Seeded) -> None:
    with signed_in(seeded.server, "compliance_officer") as b, browser(seeded.server) as other:
        cookie = b.client.cookies["al_console"]
        flipped = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
        other.client.cookies.set("al_console", flipped, path="/console/")
        assert other.get("/console/search").status_code == 303
