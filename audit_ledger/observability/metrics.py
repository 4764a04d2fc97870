"""Prometheus metrics, named by Prometheus conventions (base units, ``_total`` counters).

Process-local counters and histograms live in prometheus-client's default registry; with several
workers ``audit-ledger serve`` runs them in multiprocess mode, so that any worker's ``/metrics``
reports the totals (:mod:`audit_ledger.observability.multiproc`). Facts about the
ledger itself (log size, checkpoint lag, last verification, last retention run) are read from the
database at scrape time, so every replica reports the same truth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event

from audit_ledger.errors import AuditLedgerError
from audit_ledger.observability.multiproc import MULTIPROC_ENV, worker_registry

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests served.", ["method", "route", "status_class"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template (never the raw path).",
    ["method", "route", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
)
DB_DURATION = Histogram(
    "database_query_duration_seconds",
    "Database statement latency by statement kind.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
APPENDS = Counter(
    "ledger_appends_total",
    "Events submitted for append, by category and outcome.",
    ["category", "outcome"],
)
APPEND_BATCH_SIZE = Histogram(
    "ledger_append_batch_size",
    "Events per append request.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000),
)
COMMIT_GROUP_SIZE = Histogram(
    "ledger_commit_group_events",
    "Events per committed transaction (group commit).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000),
)
READ_REPLICA = Counter(
    "ledger_read_replica_total",
    "Reads routed with a read replica configured, by where they were served: replica (it had "
    "replayed what the read needs), waited (after a bounded wait for replay), primary_fallback "
    "(it had not caught up), replica_down (unreachable or failing).",
    ["outcome"],
)
REPLAYS = Counter("ledger_idempotent_replays_total", "Appends answered with an earlier receipt.")
CONFLICTS = Counter("ledger_conflicts_total", "Appends refused: event_id reused, other content.")
AUTH_FAILURES = Counter(
    "ledger_auth_failures_total", "Rejected credentials or roles, by reason.", ["reason"]
)
WITNESS_SUBMISSIONS = Counter(
    "ledger_witness_submissions_total",
    "Checkpoint submissions to witnesses, by witness and outcome.",
    ["witness", "outcome"],
)
VERIFICATION_FAILURES = Counter(
    "ledger_verification_failures_total",
    "Verification runs that found a problem, by kind (incremental, full).",
    ["kind"],
)
SLOW_QUERIES = Counter(
    "database_slow_queries_total",
    "Statements that took longer than SLOW_QUERY_SECONDS, by statement kind.",
    ["operation"],
)
#: What counts as a slow statement (the plan's latency budget is 2 s for a whole append).
SLOW_QUERY_SECONDS = 1.0
RETENTION_RUNS = Counter("ledger_retention_runs_total", "Retention runs completed.")
RETENTION_PURGED = Counter(
    "ledger_retention_payloads_purged_total", "Payloads deleted by retention.", ["category"]
)
RETENTION_KEYS = Counter(
    "ledger_retention_keys_destroyed_total", "Data keys destroyed by retention.", ["category"]
)
#: Outcomes of :data:`ERASURES`: each erasure run counts once, by what it left its request(s).
ERASURE_OUTCOMES = ("done", "blocked", "resumed")
ERASURES = Counter(
    "ledger_erasures_total",
    "Erasure runs by outcome: done (erased whole when asked, or when a pending request was "
    "retried), blocked (a legal hold kept some data; the request waits for its release), "
    "resumed (a blocked request erased whole after its holds were released).",
    ["outcome"],
)
LEGAL_HOLDS = Counter(
    "ledger_legal_holds_total", "Legal holds placed and released, by action.", ["action"]
)
# Every series exists from the start at 0, so dashboards show 0 rather than "no data".
for _label in ERASURE_OUTCOMES:
    ERASURES.labels(_label)
for _label in ("placed", "released"):
    LEGAL_HOLDS.labels(_label)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def _operation(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "OTHER"
    return word if word in {"SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "BEGIN"} else "OTHER"


def instrument_engine(engine: Engine) -> None:
    """Time every statement (labels: statement kind only — never SQL text or values)."""
    if getattr(engine, "_audit_ledger_instrumented", False):
        return

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("audit_ledger_t0", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info.get("audit_ledger_t0")
        if started:
            elapsed = time.perf_counter() - started.pop()
            operation = _operation(statement)
            DB_DURATION.labels(operation).observe(elapsed)
            if elapsed > SLOW_QUERY_SECONDS:
                SLOW_QUERIES.labels(operation).inc()

    engine._audit_ledger_instrumented = True  # type: ignore[attr-defined]


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _witness_lag(ledger: Any) -> Iterator[Metric]:
    """Per witness: entries not covered by its latest cosignature, and that cosignature's age."""
    try:
        lags = ledger.witnessing.lag()
    except AuditLedgerError:
        return
    if not lags:
        return
    lag = GaugeMetricFamily(
        "ledger_witness_lag_entries",
        "Log size minus the tree size of the witness's latest cosignature.",
        labels=["witness"],
    )
    age = GaugeMetricFamily(
        "ledger_witness_seconds_since_cosignature",
        "Age of the witness's latest cosignature (absent when it never cosigned).",
        labels=["witness"],
    )
    for item in lags:
        lag.add_metric([item.witness], item.lag_entries)
        if item.age_seconds is not None:
            age.add_metric([item.witness], item.age_seconds)
    yield lag
    yield age


def _database(ledger: Any) -> Iterator[Metric]:
    """The server's connections and replica lag (each process's pool: observability.pool)."""
    try:
        stats = ledger.database_stats()
    except AuditLedgerError:
        return
    if stats is None:
        return
    yield GaugeMetricFamily(
        "ledger_database_connections",
        "Server connections to this database (every client).",
        value=stats.connections,
    )
    lag = GaugeMetricFamily(
        "ledger_database_replication_lag_seconds",
        "Replay lag of each replica (PostgreSQL primary with replicas only).",
        labels=["replica"],
    )
    for replica, seconds in sorted(stats.replication_lag_seconds.items()):
        lag.add_metric([replica], seconds)
    yield lag


class LedgerStateCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ledger_database_up", "1 if the database answered this scrape.")
        try:
            size = self.ledger.log.size()
            latest = self.ledger.log.latest_checkpoint()
            runs = self.ledger.jobs.runs()
        except AuditLedgerError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("ledger_log_size", "Entries in the log.", value=size)
        cp_size = latest.tree_size if latest else 0
        yield GaugeMetricFamily(
            "ledger_checkpoint_size", "Tree size of the latest checkpoint.", value=cp_size
        )
        yield GaugeMetricFamily(
            "ledger_checkpoint_lag_entries",
            "Entries not yet covered by a checkpoint.",
            value=size - cp_size,
        )
        now = time.time()
        signed = runs.get("checkpoint_signed")
        if signed and (ts := _epoch(signed[1])) is not None:
            yield GaugeMetricFamily(
                "ledger_seconds_since_last_checkpoint",
                "Seconds since a checkpoint was signed.",
                value=max(0.0, now - ts),
            )
        verify = runs.get("verify")
        if verify and (ts := _epoch(verify[1])) is not None:
            yield GaugeMetricFamily(
                "ledger_last_verification_timestamp_seconds",
                "When verification last ran.",
                value=ts,
            )
            yield GaugeMetricFamily(
                "ledger_last_verification_success",
                "1 if the last full verification passed.",
                value=1 if verify[2] == "ok" else 0,
            )
        recent = runs.get("verify_recent")
        if recent and (ts := _epoch(recent[1])) is not None:
            yield GaugeMetricFamily(
                "ledger_last_incremental_verification_timestamp_seconds",
                "When the incremental (every-minute) verification last ran.",
                value=ts,
            )
            yield GaugeMetricFamily(
                "ledger_last_incremental_verification_success",
                "1 if the last incremental verification passed, 0 if it found tampering.",
                value=1 if recent[2] == "ok" else 0,
            )
        yield from _witness_lag(self.ledger)
        yield from _database(self.ledger)
        job_ts = GaugeMetricFamily(
            "ledger_job_last_run_timestamp_seconds",
            "When each scheduled job last ran.",
            # Not "job": Prometheus sets that label to the scrape job's name and would rename
            # ours to exported_job, so no rule could select a job by name.
            labels=["scheduled_job"],
        )
        for name, (_, when, _) in sorted(runs.items()):
            if (ts := _epoch(when)) is not None:
                job_ts.add_metric([name], ts)
        yield job_ts


def render(state: Collector) -> bytes:
    """The ``/metrics`` body: this process's metrics (every worker's in multiprocess mode, see
    :mod:`audit_ledger.observability.multiproc`) and then the ledger's state, collected here
    once per scrape — by the worker that answers, never once per worker."""
    directory = os.environ.get(MULTIPROC_ENV)
    registry = worker_registry(directory) if directory else REGISTRY
    state_registry = CollectorRegistry()
    state_registry.register(state)
    return generate_latest(registry) + generate_latest(state_registry)
