"""``/v1/log``: checkpoints, the verifier key, leaves and proofs (DESIGN §4)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from audit_ledger.api.deps import AnyPrincipal, Auditor, ledger_of, run
from audit_ledger.api.models import ConsistencyOut, InclusionOut, LeavesOut
from audit_ledger.api.openapi import AUTHENTICATED, ROLE_GATED, problems
from audit_ledger.errors import NotFoundError
from audit_ledger.ledger import bundles

router = APIRouter(tags=["log"])


@router.get(
    "/v1/log/checkpoint",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "the signed note (C2SP tlog-checkpoint)"},
        **problems(*AUTHENTICATED, 404),
    },
)
async def checkpoint(request: Request, principal: AnyPrincipal) -> PlainTextResponse:
    note = await run(ledger_of(request).log.cosigned_checkpoint)
    if note is None:
        raise NotFoundError("no checkpoint yet (the log is empty)")
    return PlainTextResponse(note)


@router.get(
    "/v1/log/verifier-key",
    response_class=PlainTextResponse,
    responses={200: {"description": "the note verifier key (C2SP signed-note)"}},
)
async def verifier_key(request: Request) -> PlainTextResponse:
    return PlainTextResponse(ledger_of(request).log.verifier_key() + "\n")


@router.get("/v1/log/leaves", response_model=LeavesOut, responses=problems(*ROLE_GATED, 422))
async def leaves(
    request: Request,
    principal: Auditor,
    start: Annotated[int, Query(ge=0)],
    end: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    log = ledger_of(request).log
    rows = await run(log.read_leaves, principal, start, end, "GET /v1/log/leaves")
    return {
        "leaves": [
            {"seq": seq, "leaf": base64.b64encode(leaf).decode("ascii")} for seq, leaf in rows
        ]
    }


@router.get(
    "/v1/log/proof/inclusion",
    response_model=InclusionOut,
    responses=problems(*ROLE_GATED, 422),
)
async def inclusion(
    request: Request,
    principal: Auditor,
    seq: Annotated[int, Query(ge=0)],
    tree_size: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    proof = await run(ledger_of(request).log.inclusion_proof, seq, tree_size)
    return {"seq": seq, "tree_size": tree_size, "hashes": [h.hex() for h in proof]}


@router.get(
    "/v1/log/proof/consistency",
    response_model=ConsistencyOut,
    responses=problems(*ROLE_GATED, 422),
)
async def consistency(
    request: Request,
    principal: Auditor,
    first: Annotated[int, Query(ge=1)],
    second: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    proof = await run(ledger_of(request).log.consistency_proof, first, second)
    return {"first": first, "second": second, "hashes": [h.hex() for h in proof]}


@router.get(
    "/v1/log/proof/bundle",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "a c2sp.org/tlog-proof@v1 bundle (text/plain)"},
        **problems(*ROLE_GATED, 404, 422),
    },
)
async def proof_bundle(
    request: Request, principal: Auditor, seq: Annotated[int, Query(ge=0)]
) -> PlainTextResponse:
    """A C2SP tlog-proof bundle of one entry against the latest checkpoint (DESIGN §7)."""
    log = ledger_of(request).log
    text = await run(bundles.proof_bundle, log, principal, seq, "GET /v1/log/proof/bundle")
    return PlainTextResponse(text)
