"""The access trail: who read what, and when (issue #14), newest first.

Every read through the API, the CLI or this console appends a ``records_read`` operation to
``ledger_operations`` (:meth:`audit_ledger.ledger.reads.Reads.record`); this page is a search
over them through the same read use case, so it is itself recorded and gated by the category's
policy: its plaintext readers (the security team) see principal, endpoint and seqs; the auditor
sees headers only. The seqs shown are what the record holds (today the first and last seq of a
read; exact seqs are issue #14 item 3).
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
from audit_ledger.ledger.console_sessions import Session
from audit_ledger.ledger.reads import Query

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
TRAIL_CATEGORY, TRAIL_EVENT = "ledger_operations", "records_read"
PAGE = 50


async def _trail(request: Request, session: Session, cursor: str | None) -> Response:
    reads = ledger_of(request).reads
    q = Query(TRAIL_CATEGORY, TRAIL_EVENT, limit=PAGE, cursor=cursor, newest_first=True)
    page = await run(reads.query, session.principal, q, "GET /console/access")
    return render(request, "access.html", session=session, page=page)


@router.get("/access")
async def access(request: Request, session: SignedIn) -> Response:
    return await _trail(request, session, None)


@router.post("/access")
async def access_page(request: Request, session: SignedIn) -> Response:
    form = await read_form(request)
    ledger_of(request).console_sessions.check_csrf(session, form.get("csrf"))
    return await _trail(request, session, (form.get("cursor") or "").strip() or None)
