"""What every console page shares: the session cookie, CSRF checks, form bodies, security
headers and rendering. Transport only: who may read what is the ledger's.

Headers (issue #14): a strict Content-Security-Policy with no inline script or style
(CSP Level 3 ``default-src 'self'``, ``frame-ancestors 'none'``), ``X-Frame-Options: DENY``
(RFC 7034) for older browsers, ``nosniff``, ``no-referrer`` (a URL never leaks to another
site) and ``no-store`` (pages carry personal data: nothing goes to a cache or history).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine, Iterable
from importlib import resources
from ipaddress import ip_address
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

import orjson
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from audit_ledger.errors import (
    AuditLedgerError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RefusedError,
    ValidationError,
)
from audit_ledger.ledger.console_sessions import Session
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability import metrics
from audit_ledger.observability.loggers import get_logger

SESSION_COOKIE = "al_console"
#: Double-submit value of the sign-in form (there is no session to bind a token to yet).
PRE_COOKIE = "al_console_pre"
PREFIX = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_FORM = "application/x-www-form-urlencoded"
#: Console errors as HTML pages (the API's problem+json mapping lives in api/problems.py).
_STATUS = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (RefusedError, 409),
    (PayloadTooLargeError, 413),
    (ValidationError, 422),
)

security_log = get_logger("security")
T = TypeVar("T")
_templates = Environment(
    loader=FileSystemLoader(str(resources.files("audit_ledger.console") / "templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
# Header members such as ``refs`` and nested payload fields are shown as JSON, not Python repr.
_templates.filters["show"] = lambda value: (
    orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, dict | list)
    else value
)


class SignInRequired(Exception):  # noqa: N818 - a redirect, not a failure
    """No valid session: the page answers with a redirect to the sign-in form."""


def ledger_of(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def run(func: Callable[..., T], *args: Any) -> T:
    """Blocking ledger work (database I/O) in a worker thread."""
    return await asyncio.to_thread(func, *args)


def on_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return host in {"localhost", "testclient"}


def cookie_secure(request: Request) -> bool:
    """``Secure`` unless the browser is on this machine over plain HTTP (development)."""
    return request.url.scheme == "https" or not on_loopback(request)


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=PREFIX + "/",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=PREFIX + "/", httponly=True, samesite="strict", secure=cookie_secure(request)
    )


async def current_session(request: Request) -> Session:
    """The request's session (re-checked against the principals table) or a redirect."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise SignInRequired
    sessions = ledger_of(request).console_sessions
    try:
        session = await run(sessions.resume, cookie)
    except AuthenticationError as exc:
        metrics.AUTH_FAILURES.labels(str(exc)).inc()
        security_log.warning("console_session_refused", reason=str(exc))
        raise SignInRequired from None
    request.state.principal = session.principal.name
    return session


SignedIn = Annotated[Session, Depends(current_session)]


def require(request: Request, session: Session, roles: Iterable[str]) -> None:
    """The API's role check (``api/deps.require``) for a console page."""
    if not session.principal.has_any(roles):
        raise PermissionDeniedError("your roles do not allow this page")


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form within the configured body limit; one value per field."""
    limit = ledger_of(request).settings.max_body_bytes
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise ValidationError(
            "the form must be sent as application/x-www-form-urlencoded",
            [{"field": "content-type", "problem": "unsupported"}],
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the form is larger than {limit} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise ValidationError(
            "the form is not UTF-8", [{"field": "body", "problem": "not UTF-8"}]
        ) from None
    repeated = sorted(name for name, values in fields.items() if len(values) > 1)
    if repeated:
        raise ValidationError(
            "a form field was sent twice",
            [{"field": name, "problem": "repeated"} for name in repeated],
        )
    return {name: values[0] for name, values in fields.items()}


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = context.get("session")
    if isinstance(session, Session) and "csrf" not in context:
        context["csrf"] = ledger_of(request).console_sessions.csrf_token(session)
    html = _templates.get_template(template).render(prefix=PREFIX, **context)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, exc: AuditLedgerError) -> Response:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), None)
    if status is None:
        raise exc  # not a request error: the app's handler answers it (503, 500)
    if status == 403:
        metrics.AUTH_FAILURES.labels("forbidden").inc()
        security_log.warning(
            "permission_denied",
            principal=getattr(request.state, "principal", None),
            route=f"{request.method} {request.url.path}",
        )
    # The messages are the ledger's own (never a submitted value); field names only.
    errors = getattr(exc, "fields", None) or []
    return render(request, "error.html", status, message=str(exc), errors=errors)


class ConsoleRoute(APIRoute):
    """Every console response carries the security headers, errors become HTML pages and a
    missing session becomes a redirect."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
                if request.cookies.get(SESSION_COOKIE):
                    clear_cookie(request, response, SESSION_COOKIE)
            except AuditLedgerError as exc:
                response = error_page(request, exc)
            response.headers.update(SECURITY_HEADERS)
            return response

        return guarded


def new_pre_token() -> str:
    return secrets.token_urlsafe(24)
