"""The console's pages: sign-in/out, search, a record with its inclusion proof, chain status.

Each page calls the same ledger use case as the matching API route (``reads.query`` as
``POST /v1/events/search``, ``reads.entry`` as ``GET /v1/events/{seq}``, ``log`` as
``/v1/log/…``), so what a role may see is decided in one place and every read is recorded.
Identifiers that are personal data (user id, order id) only ever travel in POST bodies; the
next page of a search is a form carrying the filters and the cursor, never a link.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from audit_ledger.console.web import (
    PRE_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    ConsoleRoute,
    SignedIn,
    clear_cookie,
    ledger_of,
    new_pre_token,
    read_form,
    render,
    run,
    security_log,
    set_cookie,
)
from audit_ledger.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from audit_ledger.ledger.console_sessions import Session
from audit_ledger.ledger.reads import Query
from audit_ledger.observability import metrics
from audit_ledger.roles import WRITER

#: Matches of a search are counted up to here (more says "more than"): the count costs at most
#: this many index entries, where an exact count over millions would be a scan.
MATCH_CAP = 10_000

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
SEARCH_FIELDS = (
    "category",
    "event_type",
    "since",
    "until",
    "recorded_since",
    "recorded_until",
    "user_id",
    "order_id",
    "event_id",
    "order",
    "limit",
)
ORDERS = {"oldest": False, "newest": True}
_STATIC = {"console.css": "text/css; charset=utf-8"}


@router.get("/")
async def home(request: Request, session: SignedIn) -> Response:
    landing = "search" if _categories(request, session) else "principals"
    return RedirectResponse(f"{PREFIX}/{landing}", status_code=303)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media = _STATIC.get(name)
    if media is None:
        raise NotFoundError("no such console asset")
    body = (resources.files("audit_ledger.console") / "static" / name).read_bytes()
    return Response(body, media_type=media)


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    pre = new_pre_token()
    response = render(request, "sign_in.html", csrf=pre)
    set_cookie(request, response, PRE_COOKIE, pre)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    pre = request.cookies.get(PRE_COOKIE, "")
    # Bytes, not str: compare_digest refuses non-ASCII text (a 500 for a crafted form).
    submitted = form.get("csrf", "").encode("utf-8")
    if not pre or not hmac.compare_digest(pre.encode("utf-8"), submitted):
        raise PermissionDeniedError("the sign-in form expired or came from another site")
    sessions = ledger_of(request).console_sessions
    try:
        session, cookie = await run(sessions.sign_in, form.get("token", "").strip())
    except AuthenticationError as exc:
        # The reason code only, as the API logs it: the submitted token is never echoed.
        metrics.AUTH_FAILURES.labels(str(exc)).inc()
        security_log.warning("console_sign_in_failed", reason=str(exc))
        fresh = new_pre_token()
        failed = render(
            request, "sign_in.html", 401, csrf=fresh, failed="That token was not accepted."
        )
        set_cookie(request, failed, PRE_COOKIE, fresh)
        return failed
    if session.principal.roles <= {WRITER}:
        raise PermissionDeniedError("the writer role appends events; it has no console")
    security_log.info("console_signed_in", principal=session.principal.name)
    # Readers land on search; an admin (no category to read) on the principals page.
    landing = "search" if _categories(request, session) else "principals"
    response = RedirectResponse(f"{PREFIX}/{landing}", status_code=303)
    set_cookie(request, response, SESSION_COOKIE, cookie)
    clear_cookie(request, response, PRE_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: SignedIn) -> Response:
    form = await read_form(request)
    sessions = ledger_of(request).console_sessions
    sessions.check_csrf(session, form.get("csrf"))
    await run(sessions.sign_out, session)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


def _categories(request: Request, session: Session) -> list[str]:
    return sorted(ledger_of(request).policy.visible_categories(session.principal.roles))


@router.get("/search")
async def search_form(request: Request, session: SignedIn) -> Response:
    return render(
        request,
        "search.html",
        session=session,
        categories=_categories(request, session),
        filters={},
        page=None,
    )


def _query(form: dict[str, str], default_limit: int) -> Query:
    """Form fields to the read use case's filters; blank fields are no filter."""
    values = {name: (form.get(name) or "").strip() or None for name in SEARCH_FIELDS}
    limit = default_limit
    if values["limit"] is not None:
        if not values["limit"].isdigit():
            raise ValidationError(
                "page size must be a whole number", [{"field": "limit", "problem": "not a number"}]
            )
        limit = int(values["limit"])
    order = values["order"] or "oldest"
    if order not in ORDERS:
        raise ValidationError(
            "order is newest or oldest", [{"field": "order", "problem": "unknown order"}]
        )
    return Query(
        values["category"],
        values["event_type"],
        values["since"],
        values["until"],
        values["user_id"],
        values["order_id"],
        limit,
        (form.get("cursor") or "").strip() or None,
        values["recorded_since"],
        values["recorded_until"],
        values["event_id"],
        ORDERS[order],
    )


#: The search form's filters as a query, for the downloads of the same search (console/exports).
search_query = _query


@router.post("/search")
async def search(request: Request, session: SignedIn) -> Response:
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    q = _query(form, min(50, ledger.settings.page_limit_default))
    page = await run(ledger.reads.query, session.principal, q, "POST /console/search")
    # The count of matches, above the first page only: later pages carry on the same paging.
    roles = session.principal.roles
    matches = None if q.cursor else await run(ledger.reads.count_for, roles, q, MATCH_CAP)
    filters = {name: form.get(name, "") for name in SEARCH_FIELDS}
    return render(
        request,
        "search.html",
        session=session,
        categories=_categories(request, session),
        filters=filters,
        page=page,
        first=not q.cursor,
        matches=matches,
        match_cap=MATCH_CAP,
    )


def _seq(text: str) -> int:
    if not text.isdigit() or len(text) > 16:
        raise ValidationError("a seq is a whole number", [{"field": "seq", "problem": "invalid"}])
    return int(text)


def _inclusion(request: Request, seq: int) -> dict[str, Any] | None:
    """The entry's inclusion proof against the latest checkpoint (RFC 9162 §2.1.3), or None
    while no checkpoint covers it yet."""
    log = ledger_of(request).log
    checkpoint = log.latest_checkpoint()
    if checkpoint is None or seq >= checkpoint.tree_size:
        return None
    hashes = log.inclusion_proof(seq, checkpoint.tree_size)
    return {
        "tree_size": checkpoint.tree_size,
        "root": checkpoint.root_hash.hex(),
        "hashes": [h.hex() for h in hashes],
        "note": log.cosigned_note(checkpoint),
    }


@router.get("/records/{seq}")
async def record(request: Request, session: SignedIn, seq: str) -> Response:
    number = _seq(seq)
    reads = ledger_of(request).reads
    view = await run(reads.entry, session.principal, number, "GET /console/records/{seq}")
    proof = await run(_inclusion, request, number)
    return render(request, "record.html", session=session, view=view, proof=proof)


def _status(request: Request) -> dict[str, Any]:
    ledger = ledger_of(request)
    runs = ledger.jobs.runs()
    return {
        "size": ledger.log.size(),
        "checkpoint": ledger.log.latest_checkpoint(),
        "note": ledger.log.cosigned_checkpoint(),
        "runs": sorted(runs.items()),
        "verify": runs.get("verify"),
        "witnesses": ledger.witnessing.lag(),
    }


@router.get("/status")
async def status(request: Request, session: SignedIn) -> Response:
    return render(request, "status.html", session=session, **(await run(_status, request)))


#: Added after every other console router (see the package's ``__init__``).
fallback = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@fallback.api_route("/{rest:path}", methods=["GET", "POST"])
async def not_found(rest: str) -> Response:
    """Any other console path: an HTML 404 with the console's headers (last route)."""
    raise NotFoundError("no such console page")
