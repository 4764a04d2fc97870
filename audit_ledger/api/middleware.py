"""ASGI middleware: correlation ids, request metrics and the access log.

Metrics and log lines are labelled by the matched *route template* (``/v1/events/{seq}``, as
the OpenAPI document writes it), never the raw path, and carry no query string, body or token.
The correlation id comes from ``X-Correlation-ID`` when it is a plain token (else a fresh one),
is bound to every log line of the request and is echoed in the response.

A 5xx answer is also one error-level line (so it reaches the error tier) naming the error class
and, for an unexpected exception, where it was raised — never the exception's message, which
could quote submitted values. Unexpected exceptions are answered here rather than by Starlette's
``ServerErrorMiddleware``: that one sits outside this middleware, so its 500 carried no
correlation id, and uvicorn logged the traceback outside the JSON logs.
"""

from __future__ import annotations

import time
import traceback

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_ledger.api.problems import from_error
from audit_ledger.observability import metrics
from audit_ledger.observability.loggers import get_logger
from audit_ledger.observability.logging import correlation_id_from

HEADER = b"x-correlation-id"
#: Methods kept by name in labels and log lines. The method is client-supplied text (h11 accepts
#: any token): anything else becomes "OTHER", so a client can neither put personal data into a
#: metric label or an access line nor create unbounded label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
perf_log = get_logger("performance")
app_log = get_logger("application")


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = None
        for name, value in scope.get("headers", ()):
            if name == HEADER:
                supplied = value.decode("latin-1")
                break
        correlation_id = correlation_id_from(supplied)
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        status = 500
        responded = False
        where: list[str] | None = None
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = int(message["status"])
                responded = True
                headers = list(message.get("headers", []))
                headers.append((HEADER, correlation_id.encode("ascii")))
                message["headers"] = headers
            await send(message)

        structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if responded:
                raise
            scope["state"]["error"] = exc.__class__.__name__
            where = [
                f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}:{frame.name}"
                for frame in traceback.extract_tb(exc.__traceback__)[-3:]
            ]
            await from_error(exc)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            labels = (method, route, metrics.status_class(status))
            metrics.HTTP_REQUESTS.labels(*labels).inc()
            metrics.HTTP_DURATION.labels(*labels).observe(elapsed)
            perf_log.info(
                "http_request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                principal=scope.get("state", {}).get("principal"),
            )
            if status >= 500:
                app_log.error(
                    "request_failed",
                    method=method,
                    route=route,
                    status=status,
                    error=scope.get("state", {}).get("error"),
                    where=where,
                )
            structlog.contextvars.unbind_contextvars("correlation_id")


def _route_template(scope: Scope) -> str:
    """The matched route's path as OpenAPI names it: ``path_format`` drops Starlette's
    converters (``/tlog/tile/{path:path}`` is ``/tlog/tile/{path}`` in /openapi.json), so a
    label can be looked up in the API document."""
    route = scope.get("route")
    path = getattr(route, "path_format", None)
    return path if isinstance(path, str) else "unmatched"
