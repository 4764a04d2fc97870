"""Principals (admin) in the console: list, add or rotate (the token is shown once), revoke.

The same use cases as ``audit-ledger principals add|list|rotate|revoke``:
``ledger.principals``, each change recorded in the chain in its own transaction, with the
signed-in admin as the actor.
The new token is on the one answer page only (``Cache-Control: no-store``), never in a URL or
a log. Revoking a principal ends its console sessions at their next request.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from audit_ledger.console.web import (
    PREFIX,
    ConsoleRoute,
    SignedIn,
    ledger_of,
    read_form,
    render,
    require,
    run,
)
from audit_ledger.ledger.console_sessions import Session
from audit_ledger.roles import ADMIN, ROLES

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
ADMINS = (ADMIN,)


def _page(request: Request, session: Session, status: int = 200, **extra: object) -> Response:
    principals = sorted(ledger_of(request).principals.all(), key=lambda p: p.name)
    return render(
        request,
        "principals.html",
        status,
        session=session,
        principals=principals,
        roles=sorted(ROLES),
        **extra,
    )


@router.get("/principals")
async def principals(request: Request, session: SignedIn) -> Response:
    require(request, session, ADMINS)
    return await run(_page, request, session)


@router.post("/principals")
async def add_principal(request: Request, session: SignedIn) -> Response:
    require(request, session, ADMINS)
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    name = (form.get("name") or "").strip()
    chosen = [role for role in sorted(ROLES) if form.get(f"role.{role}") == "yes"]
    token = await run(lambda: ledger.principals.add(name, chosen, actor=session.principal.name))
    return await run(lambda: _page(request, session, 201, added=name, token=token))


@router.post("/principals/{name}/revoke")
async def revoke_principal(request: Request, session: SignedIn, name: str) -> Response:
    require(request, session, ADMINS)
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    await run(lambda: ledger.principals.revoke(name, actor=session.principal.name))
    return RedirectResponse(f"{PREFIX}/principals", status_code=303)


@router.post("/principals/{name}/rotate")
async def rotate_principal(request: Request, session: SignedIn, name: str) -> Response:
    """A new token for the same principal (``principals rotate``): the old one stops working at
    once, the name (the writer name in later headers) and roles stay; shown on this page only."""
    require(request, session, ADMINS)
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    token = await run(lambda: ledger.principals.rotate(name, actor=session.principal.name))
    return await run(lambda: _page(request, session, rotated=name, token=token))
