"""Liveness, readiness and Prometheus metrics (public).

Readiness is the primary database (reachable, schema current) and the keys; with a read replica
``/readyz`` also reports it (``read_replica``: reachable, entries its replay is behind) without
failing on it, since reads fall back to the primary while it is down.
"""

from __future__ import annotations

import asyncio

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
    ledger = ledger_of(request)
    checks, replica = await asyncio.gather(run(_readiness, ledger), _replica(ledger))
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": checks}
    if replica is not None:
        body["read_replica"] = replica
    return JSONResponse(
        body,
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )


#: How long /readyz waits for the read replica. A probe's own timeout is often 1 s, and a replica
#: that drops packets would hold each connection attempt for its 2 s connect timeout: the
#: service must not look unready because of a replica its reads do without.
REPLICA_PROBE_SECONDS = 0.5


async def _replica(ledger: Ledger) -> dict[str, object] | None:
    """The read replica's state (None without one). Never a readiness check: while it is down
    or behind, reads run on the primary (ledger/replica.py)."""
    if ledger.read_store is None:
        return None
    try:
        state = await asyncio.wait_for(run(ledger.read_source.replica_state), REPLICA_PROBE_SECONDS)
    except TimeoutError:
        state = None  # the attempt goes on in its thread, bounded by the connect timeout
    if state is None or not state.reachable:
        return {"status": "unreachable", "lag_entries": None}
    return {"status": "ok", "lag_entries": state.lag_entries}


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
