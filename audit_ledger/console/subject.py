"""The subject report (issue #14): every entry about one data subject that the signed-in role
may read, with its payload state, and the legal holds that keep them.

The entries come from the same use case as ``POST /v1/events/search`` with ``user_id``
(``reads.query``, one search over every category the roles may read, each page recorded as a
read); the holds, and for a privacy officer (who alone may list erasures, as through
``GET /v1/erasure-requests``) the subject's pending and blocked erasure requests, from
:mod:`audit_ledger.ledger.subject_report`. The user id travels only in
POST bodies (the next page is a form, never a link) and only roles that read some category in
plaintext (personal data) reach the page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from audit_ledger.console.web import (
    PREFIX,
    ConsoleRoute,
    SignedIn,
    ledger_of,
    read_form,
    render,
    run,
)
from audit_ledger.errors import PermissionDeniedError, ValidationError
from audit_ledger.ledger.console_sessions import Session
from audit_ledger.ledger.erasure import request_view
from audit_ledger.ledger.holds import hold_view
from audit_ledger.ledger.reads import Page, Query
from audit_ledger.ledger.subject_report import subject_erasures, subject_holds
from audit_ledger.roles import PRIVACY_OFFICER

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
ENDPOINT = "POST /console/subject"


def _readable(request: Request, session: Session) -> list[str]:
    """The categories the roles read in plaintext; none: no personal data, no page."""
    readable = ledger_of(request).policy.readable_categories(session.principal.roles)
    if not readable:
        raise PermissionDeniedError("your roles do not allow this page")
    return sorted(readable)


@router.get("/subject")
async def subject_form(request: Request, session: SignedIn) -> Response:
    categories = _readable(request, session)
    return render(request, "subject.html", session=session, categories=categories, page=None)


def _report(request: Request, session: Session, user_id: str, cursor: str | None) -> Response:
    ledger = ledger_of(request)
    categories = _readable(request, session)
    # No category filter: the read use case searches every category the roles may read.
    q = Query(user_id=user_id, limit=min(100, ledger.settings.page_limit_max), cursor=cursor)
    page: Page = ledger.reads.query(session.principal, q, ENDPOINT)
    holds = [hold_view(h) for h in subject_holds(ledger.holds, user_id, page.events)]
    erasures = None
    if session.principal.has_any((PRIVACY_OFFICER,)):
        erasures = [request_view(r) for r in subject_erasures(ledger.erasure, user_id)]
    return render(
        request,
        "subject.html",
        session=session,
        categories=categories,
        page=page,
        holds=holds,
        erasures=erasures,
        user_id=user_id,
        first=cursor is None,
    )


@router.post("/subject")
async def subject_report(request: Request, session: SignedIn) -> Response:
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    user_id = (form.get("user_id") or "").strip()
    if not user_id:
        raise ValidationError("a user id is required", [{"field": "user_id", "problem": "missing"}])
    cursor = (form.get("cursor") or "").strip() or None
    return await run(_report, request, session, user_id, cursor)
