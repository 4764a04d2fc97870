"""RFC 9457 problem details: the one place where domain errors become HTTP statuses.

Every error body is ``application/problem+json`` with a stable ``type``, a ``title``, the
``status`` and a human ``detail``; 422s add ``errors`` naming the failing fields. Submitted
values are never echoed back: they may be personal data or secrets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import fastapi.routing
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit_ledger.errors import (
    AuditLedgerError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    DatabaseUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RefusedError,
    ValidationError,
)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:audit-ledger:problem:"
RETRY_AFTER_SECONDS = 5


class UnsupportedMediaTypeError(AuditLedgerError):
    """A request body that is not JSON."""


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def from_error(exc: Exception) -> JSONResponse:
    """Map a domain error (or anything unexpected) to its problem response."""
    if isinstance(exc, ValidationError):
        return problem(422, "validation", "Invalid request", exc.detail, errors=exc.fields)
    if isinstance(exc, AuthenticationError):
        return problem(
            401,
            "unauthenticated",
            "Authentication required",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="audit-ledger"'},
        )
    if isinstance(exc, PermissionDeniedError):
        return problem(403, "forbidden", "Forbidden", str(exc))
    if isinstance(exc, NotFoundError):
        return problem(404, "not-found", "Not found", str(exc))
    if isinstance(exc, ConflictError):
        detail = str(exc) if exc.index is None else f"{exc} (events[{exc.index}])"
        return problem(409, "conflict", "Conflict", detail)
    if isinstance(exc, RefusedError):
        return problem(409, "refused", "Refused by policy", str(exc))
    if isinstance(exc, PayloadTooLargeError):
        return problem(413, "too-large", "Payload too large", str(exc))
    if isinstance(exc, UnsupportedMediaTypeError):
        return problem(415, "unsupported-media-type", "Unsupported media type", str(exc))
    if isinstance(exc, DatabaseUnavailableError):
        return problem(
            503,
            "unavailable",
            "Service unavailable",
            "the database is unreachable; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ConfigError):
        return problem(503, "misconfigured", "Service unavailable", "the service is misconfigured")
    # Storage, crypto or programming errors: never a traceback or internal detail in the body.
    return problem(500, "internal", "Internal error", "the request could not be completed")


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # The error class (never its message) for the middleware's error line on a 5xx.
    request.state.error = exc.__class__.__name__
    return from_error(exc)


#: FastAPI's first ``loc`` element says where a parameter came from; the ledger's own errors
#: name the bare field (``limit``, not ``query.limit``), and so must these.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _field(loc: Any) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or "body"


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own parameter validation, reshaped; the offending input is dropped."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    errors = [
        {"field": _field(err.get("loc", ())), "problem": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    return problem(
        422, "validation", "Invalid request", "request parameters are invalid", errors=errors
    )


def _routes(app: Any) -> Iterable[Any]:
    # FastAPI 0.16x keeps included routers as wrappers; iter_route_contexts flattens them
    # (each context exposes the effective path_regex and methods). Older ones list routes flat.
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return contexts(app.routes) if contexts is not None else app.routes  # type: ignore[no-any-return]


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (RFC 9110 §15.5.6: a 405 lists them all).

    Starlette answers 405 from the *first* route whose path matched, so ``/v1/events`` (one
    route for POST, another for GET) said ``Allow: POST`` alone; ask every route instead.
    """
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in _routes(request.app):
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods.update(route_methods)
    return ", ".join(sorted(methods))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return problem(
        exc.status_code,
        slug,
        str(exc.detail),
        str(exc.detail),
        headers=headers or None,
    )
