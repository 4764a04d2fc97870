"""What every route shares: the ledger of the running app, the caller's principal and role
checks, and reading a JSON body within the configured limit. Transport only: the rules are the
ledger's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from audit_ledger.api.openapi import json_body
from audit_ledger.api.problems import UnsupportedMediaTypeError
from audit_ledger.errors import (
    AuthenticationError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from audit_ledger.ledger.bodies import check_text, parse_json, shown_name
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability import metrics
from audit_ledger.observability.loggers import get_logger
from audit_ledger.roles import (
    ADMIN,
    AUDITOR,
    COMPLIANCE_OFFICER,
    PRIVACY_OFFICER,
    SECURITY_TEAM,
    WRITER,
)

security_log = get_logger("security")
#: Publishes the bearer scheme in the OpenAPI document (``components/securitySchemes`` and each
#: guarded operation's ``security``). ``auto_error=False``: it never answers by itself; the
#: token is parsed and refused below, as a problem+json 401 with ``WWW-Authenticate``.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description="a principal's token (`audit-ledger principals add`)",
    auto_error=False,
)
READER_ROLES = frozenset({COMPLIANCE_OFFICER, PRIVACY_OFFICER, SECURITY_TEAM, AUDITOR})
JSON_TYPES = ("application/json", "application/problem+json")
T = TypeVar("T")


def ledger_of(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def run(func: Callable[..., T], *args: Any) -> T:
    """Run blocking ledger work (database I/O) in a worker thread."""
    return await asyncio.to_thread(func, *args)


def route_of(request: Request) -> str:
    """The route as /openapi.json names it (as the request metrics label it)."""
    route = request.scope.get("route")
    return str(getattr(route, "path_format", "unmatched"))


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError("missing")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("malformed")
    return token.strip()


async def current_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    principals = ledger_of(request).principals
    try:
        token = _bearer_token(request)
        # A cached token needs no database: answer it here, not through a worker thread.
        cached = principals.cached(token)
        principal = cached if cached is not None else await run(principals.authenticate, token)
    except AuthenticationError as exc:
        reason = str(exc)
        metrics.AUTH_FAILURES.labels(reason).inc()
        security_log.warning("authentication_failed", reason=reason, route=route_of(request))
        raise
    request.state.principal = principal.name
    refuse_unsafe_parameters(request)
    return principal


def refuse_unsafe_parameters(request: Request) -> None:
    """A NUL in a query or path parameter (``?event_type=%00``, a hold id) is a 422 naming the
    parameter, for every authenticated route, before any of it reaches the database
    (PostgreSQL cannot store a NUL in text). Percent-decoding already turns undecodable bytes
    into U+FFFD, so no lone surrogate arrives this way; the check covers both all the same.
    Bodies are checked where they are parsed (:func:`audit_ledger.ledger.bodies.parse_json`)."""
    for position, (name, value) in enumerate(request.query_params.multi_items(), start=1):
        field = shown_name(name, position)
        check_text(name, field)
        check_text(value, field)
    for name, value in request.path_params.items():
        check_text(value, name)  # names of path parameters are the routes' own


def require(
    *roles: str, record_refusal: bool = False
) -> Callable[[Request, Principal], Awaitable[Principal]]:
    """The role check. With ``record_refusal`` (the read endpoints) a refused principal is also
    recorded in the chain as a ``read_refused`` operation with no category, as ``ledger.reads``
    records a category refusal (issue #14). Only after authentication: a request without a
    principal has no one to attribute it to, and recording it would let anyone grow the log."""
    allowed = frozenset(roles)

    async def check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        if not principal.has_any(allowed):
            metrics.AUTH_FAILURES.labels("forbidden").inc()
            security_log.warning(
                "permission_denied",
                principal=principal.name,
                route=f"{request.method} {route_of(request)}",
            )
            if record_refusal:
                endpoint = f"{request.method} {route_of(request)}"
                await run(ledger_of(request).reads.refused, principal, endpoint, None)
            raise PermissionDeniedError("your roles do not allow this endpoint")
        return principal

    return check


#: The writer check on its own: :mod:`audit_ledger.api.direct` calls it as FastAPI would.
writer_check = require(WRITER)
Writer = Annotated[Principal, Depends(writer_check)]
# Reader and Auditor guard only read endpoints (events, leaves, proofs, bundle): refusals are
# recorded. Writes and admin endpoints only log theirs.
Reader = Annotated[Principal, Depends(require(*READER_ROLES, record_refusal=True))]
Auditor = Annotated[Principal, Depends(require(AUDITOR, record_refusal=True))]
AnyPrincipal = Annotated[Principal, Depends(current_principal)]
PrivacyOfficer = Annotated[Principal, Depends(require(PRIVACY_OFFICER))]
HoldManager = Annotated[Principal, Depends(require(ADMIN, COMPLIANCE_OFFICER))]


async def read_json(request: Request) -> Any:
    """The request body as strict JSON, refusing bodies over the configured limit (413)."""
    limit = ledger_of(request).settings.max_body_bytes
    content_type = request.headers.get("content-type", "application/json").split(";")[0]
    if content_type.strip().lower() not in JSON_TYPES:
        raise UnsupportedMediaTypeError("request body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or serve timed its body out (api/protocol.py): nobody hears this
        # answer, but logs and metrics count it as the client's 408, not as a server error.
        raise StarletteHTTPException(408, "the request body was not received in time") from None
    return parse_json(b"".join(chunks))


def body_schema(model: Any, *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route reads itself (by ``$ref``)."""
    return json_body(model, required=required)


def has_body(request: Request) -> bool:
    """Whether the request carries a body at all (for a route whose body is optional)."""
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length != "0")
