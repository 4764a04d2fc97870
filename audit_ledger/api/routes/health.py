"""Liveness, readiness and Prometheus metrics (public)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from audit_ledger.api.deps import ledger_of, run
from audit_ledger.api.models import HealthOut, ReadyOut
from audit_ledger.errors import AuditLedgerError, DatabaseUnavailableError
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability import metrics

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready (the checks say why)"}},
)
async def readyz(request: Request) -> JSONResponse:
    checks = await run(_readiness, ledger_of(request))
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def metrics_endpoint(request: Request) -> Response:
    collector = metrics.LedgerStateCollector(ledger_of(request))
    body = await run(metrics.render, collector)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _readiness(ledger: Ledger) -> dict[str, str]:
    checks = {"keys": ledger.key_check.status()}  # cached a few seconds (ledger.key_check)
    try:
        ledger.check_schema()
        checks["database"] = "ok"
        checks["schema"] = "ok"
    except AuditLedgerError as exc:
        unreachable = isinstance(exc, DatabaseUnavailableError)
        checks["database"] = "unreachable" if unreachable else "ok"
        checks["schema"] = "unknown" if unreachable else "not migrated to the current revision"
    return checks
