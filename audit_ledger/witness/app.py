"""The witness's HTTP shell (Starlette): tlog-witness v1 ``POST <prefix>/add-checkpoint``.

Status codes are the spec's: 200 with cosignature lines; 400 malformed body or old size larger
than the checkpoint's; 403 no trusted log signature; 404 unknown origin; 409 old size is not the
witness's latest (or a same-size fork), body ``<size>\\n`` as ``text/x.tlog.size``; 422 the
consistency proof does not verify. Bodies of refusals are one short ``text/plain`` line that
never repeats what was submitted. Also ``GET /healthz`` and ``GET <prefix>/verifier-key``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from audit_ledger.core.tlog_witness import SIZE_CONTENT_TYPE, format_size
from audit_ledger.witness.witness import (
    InconsistentProofError,
    LogSignatureError,
    MalformedRequestError,
    SizeConflictError,
    UnknownLogError,
    Witness,
    WitnessError,
)

#: A checkpoint with a 63-line proof and a few signatures is well under 8 KiB.
MAX_BODY_BYTES = 64 * 1024

_STATUS: dict[type[WitnessError], int] = {
    MalformedRequestError: 400,
    LogSignatureError: 403,
    UnknownLogError: 404,
    SizeConflictError: 409,
    InconsistentProofError: 422,
}


def _status(exc: WitnessError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it exceeds :data:`MAX_BODY_BYTES` (read no further)."""
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_witness_app(witness: Witness, prefix: str = "") -> Starlette:
    """The witness's ASGI application; ``prefix`` is the submission prefix (e.g. ``/w``)."""
    prefix = prefix.rstrip("/")

    async def add_checkpoint(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return PlainTextResponse("request body too large\n", status_code=413)
        try:
            lines = await run_in_threadpool(witness.add_checkpoint, body)
        except SizeConflictError as exc:
            # Exactly the spec's type: Starlette would add "; charset=utf-8" to a media_type.
            headers = {"Content-Type": SIZE_CONTENT_TYPE}
            return Response(format_size(exc.size).encode("ascii"), 409, headers=headers)
        except WitnessError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=_status(exc))
        return PlainTextResponse(lines)

    async def verifier_key(request: Request) -> Response:
        return PlainTextResponse(witness.signer.key.encode() + "\n")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route(f"{prefix}/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route(f"{prefix}/verifier-key", verifier_key, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
