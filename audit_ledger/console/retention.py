"""Legal holds (admin, compliance officer) and erasure requests (privacy officer) in the console.

The same use cases and the same role rules as ``/v1/legal-holds`` and ``/v1/erasure-requests``
(``api/routes/retention.py``): ``ledger.holds.create``/``release``/``all`` and
``ledger.erasure.erase_subject``, each recorded in the chain with the signed-in principal as the
actor. The user id of an erasure and the identifier of a hold travel in POST bodies only.

The erasure page also lists the erasure requests (``ledger.erasure.requests``, as
``GET /v1/erasure-requests``): pending, blocked by the holds named, or done; ``?state=`` narrows
it (a state is no personal data, so it may be in the URL).
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
from audit_ledger.errors import ValidationError
from audit_ledger.ledger.console_sessions import Session
from audit_ledger.ledger.erasure import STATES, request_view
from audit_ledger.ledger.holds import SCOPES, hold_view
from audit_ledger.roles import ADMIN, COMPLIANCE_OFFICER, PRIVACY_OFFICER

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
#: Who manages holds and who erases: as the API's ``HoldManager`` and ``PrivacyOfficer``.
HOLD_MANAGERS = (ADMIN, COMPLIANCE_OFFICER)
ERASERS = (PRIVACY_OFFICER,)


def _blank(form: dict[str, str], name: str) -> str | None:
    return (form.get(name) or "").strip() or None


def _holds_page(request: Request, session: Session, status: int = 200, **extra: object) -> Response:
    holds = [hold_view(h) for h in ledger_of(request).holds.all()]
    categories = sorted(ledger_of(request).policy.categories)
    return render(
        request,
        "holds.html",
        status,
        session=session,
        holds=holds,
        scopes=SCOPES,
        categories=categories,
        **extra,
    )


@router.get("/holds")
async def holds(request: Request, session: SignedIn) -> Response:
    require(request, session, HOLD_MANAGERS)
    return await run(_holds_page, request, session)


@router.post("/holds")
async def create_hold(request: Request, session: SignedIn) -> Response:
    require(request, session, HOLD_MANAGERS)
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    scope = form.get("scope") or ""
    value = _blank(form, "category") if scope == "category" else _blank(form, "value")
    hold = await run(
        lambda: ledger.holds.create(
            scope,
            value=value,
            since=_blank(form, "since"),
            until=_blank(form, "until"),
            reason=_blank(form, "reason"),
            actor=session.principal.name,
        )
    )
    return await run(lambda: _holds_page(request, session, 201, created=hold.hold_id))


@router.post("/holds/{hold_id}/release")
async def release_hold(request: Request, session: SignedIn, hold_id: str) -> Response:
    require(request, session, HOLD_MANAGERS)
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    reason = _blank(form, "reason")
    await run(lambda: ledger.holds.release(hold_id, reason=reason, actor=session.principal.name))
    return RedirectResponse(f"{PREFIX}/holds", status_code=303)


def _erasable(request: Request) -> list[str]:
    return sorted(c.name for c in ledger_of(request).policy.categories.values() if c.erasable)


def _erasure_page(
    request: Request,
    session: Session,
    status: int = 200,
    state: str | None = None,
    report: dict[str, object] | None = None,
) -> Response:
    found = ledger_of(request).erasure.requests(state=state or None)
    return render(
        request,
        "erasure.html",
        status,
        session=session,
        erasable=_erasable(request),
        report=report,
        requests=[request_view(r) for r in found],
        states=STATES,
        state=state or "",
    )


@router.get("/erasure")
async def erasure_form(request: Request, session: SignedIn, state: str = "") -> Response:
    require(request, session, ERASERS)
    return await run(_erasure_page, request, session, 200, state)


@router.post("/erasure")
async def erase(request: Request, session: SignedIn) -> Response:
    require(request, session, ERASERS)
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    if form.get("confirm") != "yes":
        raise ValidationError(
            "tick the box to confirm: erasure destroys keys and cannot be undone",
            [{"field": "confirm", "problem": "required"}],
        )
    user_id = _blank(form, "user_id")
    if user_id is None:
        raise ValidationError("user id is required", [{"field": "user_id", "problem": "required"}])
    chosen = [name for name in _erasable(request) if form.get(f"category.{name}") == "yes"]
    report = await run(
        lambda: ledger.erasure.erase_subject(
            user_id, categories=chosen or None, actor=session.principal.name
        )
    )
    return await run(_erasure_page, request, session, 201, None, report.to_dict())
