"""Erasure requests (privacy officer) and legal holds (admin, compliance officer).

An erasure asked for is a request that is ``done``, or ``blocked`` by the legal holds that kept
some of its data until they are released (``GET /v1/erasure-requests`` lists them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from audit_ledger.api.deps import (
    HoldManager,
    PrivacyOfficer,
    body_schema,
    has_body,
    ledger_of,
    read_json,
    run,
)
from audit_ledger.api.models import (
    ErasureIn,
    ErasureOut,
    ErasureRequestsOut,
    HoldIn,
    HoldOut,
    HoldReleaseIn,
    HoldsOut,
    ReleaseOut,
)
from audit_ledger.api.openapi import BODY, ROLE_GATED, problems
from audit_ledger.errors import ValidationError
from audit_ledger.ledger.bodies import json_object
from audit_ledger.ledger.erasure import request_view
from audit_ledger.ledger.holds import hold_view

router = APIRouter(tags=["retention"])


@router.post(
    "/v1/erasure-requests",
    status_code=201,
    response_model=ErasureOut,
    responses=problems(*ROLE_GATED, *BODY, 409),
    openapi_extra=body_schema(ErasureIn),
)
async def erasure_request(request: Request, principal: PrivacyOfficer) -> dict[str, Any]:
    """Erase one data subject (crypto-shredding); refused for categories kept by law."""
    body = json_object(await read_json(request), {"user_id", "categories"}, "erasure request")
    user_id = body.get("user_id")
    if user_id is None or isinstance(user_id, bool) or not isinstance(user_id, str | int):
        raise ValidationError(
            "user_id is required (a string or an integer)",
            [{"field": "user_id", "problem": "required"}],
        )
    categories = body.get("categories")
    if categories is not None and (
        not isinstance(categories, list) or not all(isinstance(c, str) for c in categories)
    ):
        raise ValidationError(
            "categories must be a list of strings",
            [{"field": "categories", "problem": "must be a list of strings"}],
        )
    erasure = ledger_of(request).erasure
    report = await run(
        lambda: erasure.erase_subject(user_id, categories=categories, actor=principal.name)
    )
    return report.to_dict()


@router.get(
    "/v1/erasure-requests",
    response_model=ErasureRequestsOut,
    responses=problems(*ROLE_GATED, 422),
)
async def list_erasure_requests(
    request: Request,
    principal: PrivacyOfficer,
    state: Annotated[
        Literal["pending", "blocked", "done"] | None,
        Query(description="only the requests in this state"),
    ] = None,
) -> dict[str, Any]:
    """Erasure requests, newest first: pending (not run yet), blocked (by the legal holds
    named) or done. Subjects are shown by blind index only."""
    erasure = ledger_of(request).erasure
    found = await run(lambda: erasure.requests(state=state))
    return {"erasure_requests": [request_view(r) for r in found]}


@router.post(
    "/v1/legal-holds",
    status_code=201,
    response_model=HoldOut,
    responses=problems(*ROLE_GATED, *BODY),
    openapi_extra=body_schema(HoldIn),
)
async def create_hold(request: Request, principal: HoldManager) -> dict[str, Any]:
    body = json_object(
        await read_json(request),
        {"scope", "user_id", "order_id", "category", "since", "until", "reason"},
        "legal hold",
    )
    scope = body.get("scope")
    if not isinstance(scope, str):
        raise ValidationError("scope is required", [{"field": "scope", "problem": "required"}])
    for name in ("category", "since", "until", "reason"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ValidationError(
                f"{name} must be a string", [{"field": name, "problem": "must be a string"}]
            )
    value = (
        body.get("user_id")
        if scope == "subject"
        else (body.get("order_id") if scope == "order" else body.get("category"))
    )
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
        raise ValidationError(
            "identifier must be a string or an integer",
            [{"field": "value", "problem": "must be a string or an integer"}],
        )
    holds = ledger_of(request).holds
    hold = await run(
        lambda: holds.create(
            scope,
            value=value,
            since=body.get("since"),
            until=body.get("until"),
            reason=body.get("reason"),
            actor=principal.name,
        )
    )
    return hold_view(hold)


@router.get("/v1/legal-holds", response_model=HoldsOut, responses=problems(*ROLE_GATED))
async def list_holds(request: Request, principal: HoldManager) -> dict[str, Any]:
    holds = await run(ledger_of(request).holds.all)
    return {"holds": [hold_view(h) for h in holds]}


@router.post(
    "/v1/legal-holds/{hold_id}/release",
    response_model=ReleaseOut,
    responses=problems(*ROLE_GATED, *BODY, 404),
    openapi_extra=body_schema(HoldReleaseIn, required=False),
)
async def release_hold(request: Request, principal: HoldManager, hold_id: str) -> dict[str, Any]:
    reason = None
    if has_body(request):
        body = json_object(await read_json(request), HoldReleaseIn.model_fields, "hold release")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValidationError(
                "reason must be a string", [{"field": "reason", "problem": "must be a string"}]
            )
    holds = ledger_of(request).holds
    seq = await run(lambda: holds.release(hold_id, reason=reason, actor=principal.name))
    return {"hold_id": hold_id, "released_seq": seq}
