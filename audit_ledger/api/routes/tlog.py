"""``/tlog/``: the log as C2SP tlog-tiles (DESIGN §7, c2sp.org/tlog-tiles).

``checkpoint`` is the note ``GET /v1/log/checkpoint`` serves (the same ledger method);
``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]`` are hash tiles and entry bundles.
The auditor role reads them; with ``AUDIT_LEDGER_TILES_PUBLIC=true`` anyone does (headers carry
no plaintext). Unknown or non-canonical paths are 404 problems, as a static server over a
published directory would answer.

Caching (tlog-tiles: the checkpoint "SHOULD prevent caching beyond a few seconds", tiles are
immutable): full tiles are cacheable for a year and ``immutable``; partial tiles only briefly
(a log may delete them once the full tile exists); the checkpoint not at all. While tiles need
a token the answers are ``private``, so that no shared cache hands them to someone without one.
"""

from __future__ import annotations

import gzip
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials

from audit_ledger.api.deps import BEARER, current_principal, ledger_of, require, run
from audit_ledger.api.openapi import ROLE_GATED, problems
from audit_ledger.errors import NotFoundError
from audit_ledger.ledger.identity import Principal
from audit_ledger.roles import AUDITOR

router = APIRouter(tags=["tlog"])

OCTET_STREAM = "application/octet-stream"
IMMUTABLE = "max-age=31536000, immutable"
PARTIAL = "max-age=60"
ENTRIES_ENDPOINT = "GET /tlog/tile/entries"
_auditor = require(AUDITOR)


async def tile_reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal | None:
    """The auditor asking, or None when tiles are public (no token needed, none looked at)."""
    if ledger_of(request).settings.tiles_public:
        return None
    return await _auditor(request, await current_principal(request, credentials))


TileReader = Annotated[Principal | None, Depends(tile_reader)]


def _scope(principal: Principal | None) -> str:
    return "public" if principal is None else "private"


@router.get(
    "/tlog/checkpoint",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "the latest checkpoint with its cosignatures (C2SP tlog-checkpoint)"},
        **problems(*ROLE_GATED, 404),
    },
)
async def checkpoint(request: Request, principal: TileReader) -> PlainTextResponse:
    note = await run(ledger_of(request).log.cosigned_checkpoint)
    if note is None:
        raise NotFoundError("no checkpoint yet (the log is empty)")
    return PlainTextResponse(
        note,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def _accepts_gzip(request: Request) -> bool:
    """RFC 9110 §12.5.3: ``gzip`` listed with a non-zero q-value."""
    for item in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().lower().removeprefix("q=")
            return not params or (q.replace(".", "", 1).isdigit() and float(q) > 0)
    return False


@router.get(
    "/tlog/tile/{path:path}",
    response_class=Response,
    responses={
        200: {
            "description": "a hash tile or an entry bundle (C2SP tlog-tiles)",
            "content": {"application/octet-stream": {}},
        },
        **problems(*ROLE_GATED, 404, 422),
    },
)
async def tile(request: Request, path: str, principal: TileReader) -> Response:
    found = await run(ledger_of(request).tiles.get, f"tile/{path}", principal, ENTRIES_ENDPOINT)
    cache = IMMUTABLE if found.tile.full else PARTIAL
    headers = {"Cache-Control": f"{_scope(principal)}, {cache}"}
    data = found.data
    if found.tile.entries:
        # tlog-tiles: entry bundles SHOULD be compressed at the HTTP layer (JSON headers shrink
        # several-fold); hash tiles are random bytes and are not.
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request):
            data = await run(gzip.compress, data, 5)
            headers["Content-Encoding"] = "gzip"
    return Response(data, media_type=OCTET_STREAM, headers=headers)
