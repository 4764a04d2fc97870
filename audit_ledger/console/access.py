"""The access trail: who read what, and when (issue #14), newest first.

Every read through the API, the CLI or this console appends a ``records_read`` operation to
``ledger_operations`` (:meth:`audit_ledger.ledger.reads.Reads.record`); this page is a search
over them through the same read use case, so it is itself recorded and gated by the category's
policy: its plaintext readers (the security team) see principal, endpoint and seqs; the auditor
sees headers only. The seqs shown are exactly those read (issue #14 item 3: the record holds
them as run-length ranges, :mod:`audit_ledger.core.seq_ranges`). Refused reads
(``read_refused``: principal, endpoint, category) are the trail's second view,
``?kind=refused``.
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
from audit_ledger.errors import ValidationError
from audit_ledger.ledger.console_sessions import Session
from audit_ledger.ledger.reads import Query, seqs_text

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
TRAIL_CATEGORY, TRAIL_EVENT = "ledger_operations", "records_read"
REFUSED_EVENT = "read_refused"
#: The trail's two views: reads, and refused reads.
KINDS = {"reads": TRAIL_EVENT, "refused": REFUSED_EVENT}
PAGE = 50


async def _trail(request: Request, session: Session, kind: str, cursor: str | None) -> Response:
    if kind not in KINDS:
        raise ValidationError("unknown trail", [{"field": "kind", "problem": "unknown"}])
    reads = ledger_of(request).reads
    q = Query(TRAIL_CATEGORY, KINDS[kind], limit=PAGE, cursor=cursor, newest_first=True)
    page = await run(reads.query, session.principal, q, "GET /console/access")
    seqs = {v.seq: seqs_text(v.data.get("seqs")) for v in page.events if v.data is not None}
    return render(request, "access.html", session=session, page=page, kind=kind, seqs=seqs)


@router.get("/access")
async def access(request: Request, session: SignedIn, kind: str = "reads") -> Response:
    return await _trail(request, session, kind, None)


@router.post("/access")
async def access_page(request: Request, session: SignedIn) -> Response:
    form = await read_form(request)
    ledger_of(request).console_sessions.check_csrf(session, form.get("csrf"))
    cursor = (form.get("cursor") or "").strip() or None
    return await _trail(request, session, form.get("kind") or "reads", cursor)
