"""FastAPI application: the HTTP API v1 of DESIGN §4 (normative paths, parameters and shapes).

Endpoints stay thin: authenticate, check the role, hand over to the ledger, shape the answer.
Domain errors become problem+json in :mod:`audit_ledger.api.problems`, nowhere else. Database
work runs in worker threads; appends go through the :class:`GroupCommitter`.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit_ledger.api.committer import GroupCommitter
from audit_ledger.api.middleware import ObservabilityMiddleware
from audit_ledger.api.models import (
    BatchIn,
    ConsistencyOut,
    EntryOut,
    EventIn,
    InclusionOut,
    LeavesOut,
    PageOut,
    ReceiptOut,
    ReceiptsOut,
    SearchIn,
)
from audit_ledger.api.problems import (
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    domain_error_handler,
    http_error_handler,
    request_validation_handler,
)
from audit_ledger.core.canonical import strict_loads
from audit_ledger.errors import (
    AuditLedgerError,
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    FormatError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from audit_ledger.ledger.append import Receipt
from audit_ledger.ledger.events import PreparedEvent
from audit_ledger.ledger.principals import Principal
from audit_ledger.ledger.service import SYSTEM_WRITER, Ledger, Page
from audit_ledger.ledger.service import Query as LedgerQuery
from audit_ledger.observability import metrics
from audit_ledger.observability.logging import configure_logging, get_logger
from audit_ledger.roles import (
    ADMIN,
    AUDITOR,
    COMPLIANCE_OFFICER,
    PRIVACY_OFFICER,
    SECURITY_TEAM,
    WRITER,
)
from audit_ledger.scheduler import start_background
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage.holds import StoredHold

#: Set by ``audit-ledger serve --workers N`` (N > 1): each worker writes its own log files.
PER_PROCESS_LOGS_ENV = "AUDIT_LEDGER_LOG_PER_PROCESS"
security_log = get_logger("security")
app_log = get_logger("application")
READER_ROLES = frozenset({COMPLIANCE_OFFICER, PRIVACY_OFFICER, SECURITY_TEAM, AUDITOR})
JSON_TYPES = ("application/json", "application/problem+json")
T = TypeVar("T")


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def _run(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(func, *args)


# --- authentication and roles -------------------------------------------------------------------


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError("missing")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("malformed")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    ledger = _ledger(request)
    try:
        token = _bearer_token(request)
        # A cached token needs no database: answer it here, not through a worker thread.
        cached = ledger.cached_principal(token)
        principal = cached if cached is not None else await _run(ledger.authenticate, token)
    except AuthenticationError as exc:
        reason = str(exc)
        metrics.AUTH_FAILURES.labels(reason).inc()
        security_log.warning("authentication_failed", reason=reason, route=_route(request))
        raise
    request.state.principal = principal.name
    return principal


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def require(*roles: str) -> Callable[[Request, Principal], Awaitable[Principal]]:
    allowed = frozenset(roles)

    async def check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        if not principal.has_any(allowed):
            metrics.AUTH_FAILURES.labels("forbidden").inc()
            security_log.warning(
                "permission_denied",
                principal=principal.name,
                route=f"{request.method} {_route(request)}",
            )
            raise PermissionDeniedError("your roles do not allow this endpoint")
        return principal

    return check


Writer = Annotated[Principal, Depends(require(WRITER))]
Reader = Annotated[Principal, Depends(require(*READER_ROLES))]
Auditor = Annotated[Principal, Depends(require(AUDITOR))]
AnyPrincipal = Annotated[Principal, Depends(current_principal)]
PrivacyOfficer = Annotated[Principal, Depends(require(PRIVACY_OFFICER))]
HoldManager = Annotated[Principal, Depends(require(ADMIN, COMPLIANCE_OFFICER))]


def _hold_dict(hold: StoredHold) -> dict[str, Any]:
    return {
        "hold_id": hold.hold_id,
        "scope": hold.scope,
        "scope_value": hold.scope_value,
        "since": hold.since,
        "until": hold.until,
        "created_by": hold.created_by,
        "created_seq": hold.created_seq,
        "released_seq": hold.released_seq,
    }


# --- request bodies -----------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> Any:
    """The request body as strict JSON, refusing bodies over ``limit`` bytes (413)."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0]
    if content_type.strip().lower() not in JSON_TYPES:
        raise UnsupportedMediaTypeError("request body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return strict_loads(b"".join(chunks))
    except FormatError as exc:
        raise ValidationError(
            "request body is not valid JSON", [{"field": "body", "problem": str(exc)}]
        ) from None


def _object(body: Any, allowed: Iterable[str], what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError(
            f"{what} must be a JSON object", [{"field": "body", "problem": "not an object"}]
        )
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValidationError(
            f"{what} has unknown members",
            [{"field": name, "problem": "unknown member"} for name in unknown],
        )
    return body


async def _submit(
    request: Request, events: list[PreparedEvent], principal: Principal
) -> list[Receipt]:
    """Append through the group committer; count and log the outcome (never payload data)."""
    metrics.APPEND_BATCH_SIZE.observe(len(events))
    committer: GroupCommitter = request.app.state.committer
    try:
        receipts = await committer.submit(events, principal.name)
    except ConflictError:
        metrics.CONFLICTS.inc()
        for category, count in Counter(e.category for e in events).items():
            metrics.APPENDS.labels(category, "conflict").inc(count)
        raise
    except Exception:
        for category, count in Counter(e.category for e in events).items():
            metrics.APPENDS.labels(category, "error").inc(count)
        raise
    # One increment per (category, outcome), not per event: a batch holds hundreds of events.
    outcomes = Counter(
        (event.category, "replayed" if receipt.replayed else "appended")
        for event, receipt in zip(events, receipts, strict=True)
    )
    for (category, outcome), count in outcomes.items():
        metrics.APPENDS.labels(category, outcome).inc(count)
    replays = sum(count for (_, outcome), count in outcomes.items() if outcome == "replayed")
    metrics.REPLAYS.inc(replays)
    if len(events) == 1:
        app_log.info(
            "event_appended",
            seq=receipts[0].seq,
            category=events[0].category,
            event_type=events[0].event_type,
            event_correlation_id=events[0].correlation_id,
            replayed=receipts[0].replayed,
            writer=principal.name,
        )
    else:
        kinds: dict[str, int] = {}
        for event in events:
            key = f"{event.category}/{event.event_type}"
            kinds[key] = kinds.get(key, 0) + 1
        app_log.info(
            "events_appended",
            count=len(events),
            replayed=replays,
            first_seq=min(r.seq for r in receipts),
            last_seq=max(r.seq for r in receipts),
            types=kinds,
            writer=principal.name,
        )
    return receipts


def _receipts_response(receipts: list[Receipt], single: bool) -> Response:
    status = 200 if all(r.replayed for r in receipts) else 201
    body = receipts[0].to_dict() if single else {"receipts": [r.to_dict() for r in receipts]}
    # orjson: the receipts of a 1,000-event batch render in a fraction of the stdlib's time.
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# --- the application ----------------------------------------------------------------------------


def create_app(ledger: Ledger | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app. Without ``ledger`` it opens one from the environment at start-up (the
    form uvicorn's ``--factory`` and multi-worker mode use)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = ledger is None
        led = ledger or Ledger.open(settings or load_settings())
        if owned:
            configure_logging(
                led.settings.log_dir, per_process=os.environ.get(PER_PROCESS_LOGS_ENV) == "1"
            )
            led.check_schema()
        metrics.instrument_engine(led.store.engine)
        app.state.ledger = led
        app.state.committer = GroupCommitter(led)
        app.state.committer.start()
        scheduler = start_background(led) if owned and led.settings.scheduler_enabled else None
        if owned:
            # A serving process: everything built so far (modules, the app, the engine) lives
            # as long as it does. Move it out of the collector's reach, so that a full
            # collection under load scans only what requests allocate instead of stalling
            # every request of this worker for tens of milliseconds (it was the p99 of single
            # appends: 123 ms before, 57 ms after, on the benchmark box).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            await app.state.committer.stop()
            if owned:
                led.close()

    app = FastAPI(
        title="audit-ledger",
        version="1",
        summary="Append-only, hash-chained, Merkle-tree compliance audit ledger",
        lifespan=lifespan,
    )
    app.add_middleware(ObservabilityMiddleware)
    app.add_exception_handler(AuditLedgerError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, domain_error_handler)
    _routes(app)
    return app


def _settings(request: Request) -> Settings:
    return _ledger(request).settings


async def _record_read(request: Request, principal: Principal, what: Mapping[str, Any]) -> None:
    """Append the ledger_operations entry that records a read of records, before answering."""
    ledger = _ledger(request)
    op = ledger.operation_event("records_read", {"principal": principal.name, **what})
    committer: GroupCommitter = request.app.state.committer
    await committer.submit([op], SYSTEM_WRITER)


def _filters(q: LedgerQuery, ledger: Ledger) -> dict[str, Any]:
    """What a read asked for, with identifiers replaced by their blind indexes."""
    out: dict[str, Any] = {
        k: v
        for k, v in {
            "category": q.category,
            "event_type": q.event_type,
            "since": q.since,
            "until": q.until,
            "limit": q.limit,
        }.items()
        if v is not None
    }
    if q.user_id is not None:
        out["user_ref"] = ledger.keys.indexer.index("user", q.user_id)
    if q.order_id is not None:
        out["order_ref"] = ledger.keys.indexer.index("order", q.order_id)
    return out


def _page_response(page: Page) -> dict[str, Any]:
    return {"events": [v.to_dict() for v in page.events], "next_cursor": page.next_cursor}


def _routes(app: FastAPI) -> None:
    event_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EventIn.model_json_schema()}},
        }
    }
    batch_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BatchIn.model_json_schema()}},
        }
    }
    search_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SearchIn.model_json_schema()}},
        }
    }

    @app.post(
        "/v1/events",
        status_code=201,
        response_model=ReceiptOut,
        openapi_extra=event_body,
        tags=["append"],
    )
    async def append_event(request: Request, principal: Writer) -> Response:
        ledger = _ledger(request)
        body = await read_json(request, ledger.settings.max_body_bytes)
        try:
            event = ledger.prepare(body)
        except ValidationError:
            metrics.APPENDS.labels("unknown", "invalid").inc()
            raise
        receipts = await _submit(request, [event], principal)
        return _receipts_response(receipts, single=True)

    @app.post(
        "/v1/events/batch",
        status_code=201,
        response_model=ReceiptsOut,
        openapi_extra=batch_body,
        tags=["append"],
    )
    async def append_batch(request: Request, principal: Writer) -> Response:
        ledger = _ledger(request)
        body = _object(
            await read_json(request, ledger.settings.max_body_bytes), {"events"}, "batch"
        )
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise ValidationError(
                "events must be a non-empty list",
                [{"field": "events", "problem": "must be a non-empty list"}],
            )
        if len(events) > ledger.settings.max_batch_events:
            raise PayloadTooLargeError(
                f"a batch holds at most {ledger.settings.max_batch_events} events"
            )
        try:
            prepared = ledger.prepare_batch(events)
        except ValidationError:
            metrics.APPENDS.labels("unknown", "invalid").inc(len(events))
            raise
        receipts = await _submit(request, prepared, principal)
        return _receipts_response(receipts, single=False)

    async def run_query(
        request: Request, principal: Principal, q: LedgerQuery, endpoint: str
    ) -> dict[str, Any]:
        ledger = _ledger(request)
        page = await _run(ledger.query, principal.roles, q)
        seqs = [v.seq for v in page.events]
        await _record_read(
            request,
            principal,
            {
                "endpoint": endpoint,
                "filters": _filters(q, ledger),
                "count": len(seqs),
                "seqs": [seqs[0], seqs[-1]] if seqs else [],
            },
        )
        return _page_response(page)

    # exclude_unset: "data" and "payload_state_seq" appear only when the view has them
    # (DESIGN §4); without it the response model would add them as null for every caller.
    @app.get("/v1/events", response_model=PageOut, response_model_exclude_unset=True, tags=["read"])
    async def list_events(  # noqa: PLR0917 - FastAPI maps query parameters to arguments
        request: Request,
        principal: Reader,
        category: str | None = None,
        event_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        allowed = {"category", "event_type", "since", "until", "limit", "cursor"}
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            # user_id / order_id especially: personal identifiers never travel in a URL.
            raise ValidationError(
                "unknown query parameters (search by user_id/order_id with POST /v1/events/search)",
                [{"field": name, "problem": "unknown query parameter"} for name in unknown],
            )
        q = LedgerQuery(
            category,
            event_type,
            since,
            until,
            None,
            None,
            limit or _settings(request).page_limit_default,
            cursor,
        )
        return await run_query(request, principal, q, "GET /v1/events")

    @app.post(
        "/v1/events/search",
        response_model=PageOut,
        response_model_exclude_unset=True,
        openapi_extra=search_body,
        tags=["read"],
    )
    async def search_events(request: Request, principal: Reader) -> dict[str, Any]:
        ledger = _ledger(request)
        body = _object(
            await read_json(request, ledger.settings.max_body_bytes),
            SearchIn.model_fields,
            "search",
        )
        problems = []
        for name in ("category", "event_type", "since", "until", "cursor"):
            if body.get(name) is not None and not isinstance(body[name], str):
                problems.append({"field": name, "problem": "must be a string"})
        for name in ("user_id", "order_id"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
                problems.append({"field": name, "problem": "must be a string or an integer"})
        limit = body.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            problems.append({"field": "limit", "problem": "must be an integer"})
        if problems:
            raise ValidationError("search filters are invalid", problems)
        q = LedgerQuery(
            body.get("category"),
            body.get("event_type"),
            body.get("since"),
            body.get("until"),
            body.get("user_id"),
            body.get("order_id"),
            limit if limit is not None else ledger.settings.page_limit_default,
            body.get("cursor"),
        )
        return await run_query(request, principal, q, "POST /v1/events/search")

    @app.get(
        "/v1/events/{seq}",
        response_model=EntryOut,
        response_model_exclude_unset=True,
        tags=["read"],
    )
    async def get_event(request: Request, principal: Reader, seq: int) -> dict[str, Any]:
        ledger = _ledger(request)
        view = await _run(ledger.entry, principal.roles, seq)
        await _record_read(
            request, principal, {"endpoint": "GET /v1/events/{seq}", "count": 1, "seqs": [seq, seq]}
        )
        return view.to_dict()

    @app.get("/v1/log/checkpoint", response_class=PlainTextResponse, tags=["log"])
    async def checkpoint(request: Request, principal: AnyPrincipal) -> PlainTextResponse:
        latest = await _run(_ledger(request).latest_checkpoint)
        if latest is None:
            raise NotFoundError("no checkpoint yet (the log is empty or none was made)")
        return PlainTextResponse(latest.note)

    @app.get("/v1/log/verifier-key", response_class=PlainTextResponse, tags=["log"])
    async def verifier_key(request: Request) -> PlainTextResponse:
        return PlainTextResponse(_ledger(request).verifier_key() + "\n")

    @app.get("/v1/log/leaves", response_model=LeavesOut, tags=["log"])
    async def leaves(
        request: Request,
        principal: Auditor,
        start: Annotated[int, Query(ge=0)],
        end: Annotated[int, Query(ge=1)],
    ) -> dict[str, Any]:
        rows = await _run(_ledger(request).leaves, start, end)
        await _record_read(
            request,
            principal,
            {
                "endpoint": "GET /v1/log/leaves",
                "count": len(rows),
                "seqs": [rows[0][0], rows[-1][0]] if rows else [],
            },
        )
        return {
            "leaves": [
                {"seq": seq, "leaf": base64.b64encode(leaf).decode("ascii")} for seq, leaf in rows
            ]
        }

    @app.get("/v1/log/proof/inclusion", response_model=InclusionOut, tags=["log"])
    async def inclusion(
        request: Request,
        principal: Auditor,
        seq: Annotated[int, Query(ge=0)],
        tree_size: Annotated[int, Query(ge=1)],
    ) -> dict[str, Any]:
        proof = await _run(_ledger(request).inclusion_proof, seq, tree_size)
        return {"seq": seq, "tree_size": tree_size, "hashes": [h.hex() for h in proof]}

    @app.get("/v1/log/proof/consistency", response_model=ConsistencyOut, tags=["log"])
    async def consistency(
        request: Request,
        principal: Auditor,
        first: Annotated[int, Query(ge=1)],
        second: Annotated[int, Query(ge=1)],
    ) -> dict[str, Any]:
        proof = await _run(_ledger(request).consistency_proof, first, second)
        return {"first": first, "second": second, "hashes": [h.hex() for h in proof]}

    @app.post("/v1/erasure-requests", status_code=201, tags=["retention"])
    async def erasure_request(request: Request, principal: PrivacyOfficer) -> dict[str, Any]:
        """Erase one data subject (crypto-shredding); refused for categories kept by law."""
        ledger = _ledger(request)
        body = _object(
            await read_json(request, ledger.settings.max_body_bytes),
            {"user_id", "categories"},
            "erasure request",
        )
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
        report = await _run(
            lambda: ledger.erase_subject(user_id, categories=categories, actor=principal.name)
        )
        return report.to_dict()

    @app.post("/v1/legal-holds", status_code=201, tags=["retention"])
    async def create_hold(request: Request, principal: HoldManager) -> dict[str, Any]:
        ledger = _ledger(request)
        body = _object(
            await read_json(request, ledger.settings.max_body_bytes),
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
        hold = await _run(
            lambda: ledger.create_hold(
                scope,
                value=value,
                since=body.get("since"),
                until=body.get("until"),
                reason=body.get("reason"),
                actor=principal.name,
            )
        )
        return _hold_dict(hold)

    @app.get("/v1/legal-holds", tags=["retention"])
    async def list_holds(request: Request, principal: HoldManager) -> dict[str, Any]:
        holds = await _run(_ledger(request).holds)
        return {"holds": [_hold_dict(h) for h in holds]}

    @app.post("/v1/legal-holds/{hold_id}/release", tags=["retention"])
    async def release_hold(
        request: Request, principal: HoldManager, hold_id: str
    ) -> dict[str, Any]:
        ledger = _ledger(request)
        seq = await _run(lambda: ledger.release_hold(hold_id, actor=principal.name))
        return {"hold_id": hold_id, "released_seq": seq}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        checks = await _run(_readiness, _ledger(request))
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "5"},
        )

    @app.get("/metrics", tags=["health"])
    async def metrics_endpoint(request: Request) -> Response:
        collector = metrics.LedgerStateCollector(_ledger(request))
        body = await _run(metrics.render, collector)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _readiness(ledger: Ledger) -> dict[str, str]:
    checks = {"keys": "ok"}
    try:
        ledger.check_schema()
        checks["database"] = "ok"
        checks["schema"] = "ok"
    except AuditLedgerError as exc:
        unreachable = isinstance(exc, DatabaseUnavailableError)
        checks["database"] = "unreachable" if unreachable else "ok"
        checks["schema"] = "unknown" if unreachable else "not migrated to the current revision"
    return checks
