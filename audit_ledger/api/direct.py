"""``POST /v1/events`` served without the framework's per-request machinery (issue #16).

A single-event append is what the bot sends once per payment, and on the benchmark box FastAPI
spent about as much CPU per such request resolving its dependency graph (bearer scheme,
principal, role check), matching routes and passing through its exception and exit-stack layers
as the ledger spent validating, sealing and logging the event (profiled). Serving that one
route here cut the service's CPU per single append from 573-619 to 442-470 us and raised its
throughput from 2,217-2,426 to 2,737-2,854 events/s (``bench/http.py``'s wrk load, three
alternated runs each).

Nothing about the route changes: this layer calls the very functions FastAPI calls for it — the
principal (:func:`~audit_ledger.api.deps.current_principal`), the writer check, the endpoint
— in the same order, and answers their errors through the same handlers. An unexpected
exception propagates, as it does out of FastAPI, to the observability middleware, which answers
and logs it. Every other request (and this path under a ``root_path``) goes to the app
unchanged, and the route stays in the app for its OpenAPI document.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from audit_ledger.api.deps import current_principal, writer_check
from audit_ledger.api.problems import domain_error_handler, http_error_handler
from audit_ledger.api.routes.events import append_event, router
from audit_ledger.errors import AuditLedgerError

PATH = "/v1/events"


def _route() -> APIRoute:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == PATH and "POST" in (route.methods or ()):
            return route
    raise LookupError(f"no POST {PATH} route")  # pragma: no cover - a wiring mistake


#: The route this layer stands in for (routes are included in the app by reference).
ROUTE = _route()


class DirectAppend:
    """ASGI layer serving ``POST /v1/events`` straight through its own functions."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != PATH
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        # What routing would have put in the scope: the route labels the request's metrics and
        # log line (``path_format``), and the endpoint's parameters are none.
        scope["route"] = ROUTE
        scope["endpoint"] = append_event
        scope["path_params"] = {}
        request = Request(scope, receive)
        response: Response
        try:
            principal = await writer_check(request, await current_principal(request, None))
            response = await append_event(request, principal)
        except StarletteHTTPException as exc:  # the body's 408 (deps.read_json)
            response = await http_error_handler(request, exc)
        except AuditLedgerError as exc:
            response = await domain_error_handler(request, exc)
        await response(scope, receive, send)
