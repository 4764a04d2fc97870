"""``/metrics`` of a real ``audit-ledger serve``: every required metric, counts that match the
traffic sent exactly, route templates (never raw paths) as labels, and with two workers the same
totals whichever worker answers the scrape (multiprocess mode).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from audit_ledger.api.app import create_app
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability.multiproc import (
    DIRECTORY_PREFIX,
    MULTIPROC_ENV,
    worker_metrics_directory,
)
from audit_ledger.scheduler import RAN, default_jobs, run_job
from audit_ledger.settings import Settings
from tests.conftest import drop_pg_database
from tests.integration.api.conftest import LiveServer, make_server
from tests.support.factories import event
from tests.support.processes import children_of

# Traffic sent by ``_drive``; the assertions below are written in these terms.
# Metrics of serving processes (process-wide registry, multi-process mode, workers).
pytestmark = pytest.mark.process
SINGLES = 5  # financial_transactions, one per POST /v1/events
BATCHES = 2  # POST /v1/events/batch, each of BATCH_EVENTS data_privacy_events
BATCH_EVENTS = 3
REPLAYS = 3  # singles sent again unchanged
CONFLICTS = 1  # a single's event_id again with other data
INVALID = 1  # one event with an unknown category (422)
AUTH_401 = {"missing": 2, "malformed": 2, "unknown": 1, "revoked": 1}
FORBIDDEN = 3  # an auditor trying to append
READ_SEQS = (0, 1, 2)  # GET /v1/events/{seq}
LISTS = 2  # GET /v1/events?category=...
SEARCHES = 1  # POST /v1/events/search
UNMATCHED = 2  # GET on a path no route matches

#: The app's route templates: the only route label values besides "unmatched".
#: Every route template the app serves (routers are included lazily: read them from OpenAPI).
ROUTE_TEMPLATES = frozenset(create_app().openapi()["paths"])

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


#: Kept as a name for the tests that type their servers with it.
ObservedServer = LiveServer


def observed_server(
    settings: Settings, tmp_path: Path, workers: int = 1, **extra_env: str
) -> ObservedServer:
    """Principals as :func:`make_server` makes them; cwd and log dir inside ``tmp_path``."""
    server = make_server(settings, tmp_path, workers=workers)
    server.cwd = tmp_path / "workdir"
    server.cwd.mkdir(exist_ok=True)
    server.extra_env = {"AUDIT_LEDGER_LOG_DIR": str(tmp_path / "logs"), **extra_env}
    return server


@pytest.fixture
def server_factory(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    started: list[ObservedServer] = []

    def start(workers: int = 1) -> ObservedServer:
        server = observed_server(settings, tmp_path, workers=workers)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# --- scraping -----------------------------------------------------------------------------------


def scrape(server: LiveServer) -> tuple[str, Samples, dict[str, str]]:
    """The raw text, ``(sample name, labels) -> value`` and ``family -> type`` of one scrape."""
    # A fresh connection per scrape, so that with several workers scrapes land on different ones.
    r = httpx.get(server.url + "/metrics", headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(r.text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return r.text, samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: counters start at zero)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls), _ in samples.items() if n == name and label in dict(ls)}


# --- traffic ------------------------------------------------------------------------------------


def _drive(server: LiveServer, *, fresh_connections: bool = False) -> None:
    """The traffic above; ``fresh_connections``: a connection per request, so that with several
    workers the kernel spreads the requests over them (one keep-alive connection stays with
    one worker)."""
    url, writer = server.url, server.headers("writer")
    limits = httpx.Limits(max_keepalive_connections=0 if fresh_connections else None)
    with httpx.Client(base_url=url, timeout=30, limits=limits) as c:
        singles = [event() for _ in range(SINGLES)]
        for raw in singles:
            assert c.post("/v1/events", json=raw, headers=writer).status_code == 201
        for _ in range(BATCHES):
            batch = {"events": [event("data_privacy_events") for _ in range(BATCH_EVENTS)]}
            assert c.post("/v1/events/batch", json=batch, headers=writer).status_code == 201
        for raw in singles[:REPLAYS]:
            assert c.post("/v1/events", json=raw, headers=writer).status_code == 200
        for _ in range(CONFLICTS):
            clash = {**singles[-1], "data": {**singles[-1]["data"], "amount": "1.00"}}
            assert c.post("/v1/events", json=clash, headers=writer).status_code == 409
        for _ in range(INVALID):
            bad = {**event(), "category": "no_such_category"}
            assert c.post("/v1/events", json=bad, headers=writer).status_code == 422
        bad_auth = {
            "missing": {},
            "malformed": {"Authorization": "Bearer not-a-token"},
            "unknown": {"Authorization": "Bearer alt_" + "A" * 43},
            "revoked": server.headers("revoked"),
        }
        for reason, count in AUTH_401.items():
            for _ in range(count):
                r = c.post("/v1/events", json=event(), headers=bad_auth[reason])
                assert r.status_code == 401, (reason, r.text)
        for _ in range(FORBIDDEN):
            r = c.post("/v1/events", json=event(), headers=server.headers("auditor"))
            assert r.status_code == 403
        officer = server.headers("compliance_officer")
        for seq in READ_SEQS:
            assert c.get(f"/v1/events/{seq}", headers=server.headers("auditor")).status_code == 200
        for _ in range(LISTS):
            r = c.get("/v1/events", params={"category": "financial_transactions"}, headers=officer)
            assert r.status_code == 200
        for _ in range(SEARCHES):
            r = c.post("/v1/events/search", json={"order_id": "ORD-2026-0001"}, headers=officer)
            assert r.status_code == 200
        for _ in range(UNMATCHED):
            assert c.get(f"/v1/no-such-thing/{uuid.uuid4().hex}").status_code == 404


def _assert_traffic(samples: Samples, types: dict[str, str]) -> None:
    # Types of the families the QuickCart plan requires.
    assert types["http_request_duration_seconds"] == "histogram"
    assert types["http_requests"] == "counter"
    assert types["database_query_duration_seconds"] == "histogram"
    assert types["ledger_appends"] == "counter"
    assert types["ledger_append_batch_size"] == "histogram"
    assert types["ledger_idempotent_replays"] == "counter"
    assert types["ledger_conflicts"] == "counter"
    assert types["ledger_auth_failures"] == "counter"
    assert types["ledger_log_size"] == "gauge"
    assert types["ledger_database_up"] == "gauge"

    fin, priv = "financial_transactions", "data_privacy_events"
    appends = "ledger_appends_total"
    assert value(samples, appends, category=fin, outcome="appended") == SINGLES
    assert value(samples, appends, category=priv, outcome="appended") == BATCHES * BATCH_EVENTS
    assert value(samples, appends, category=fin, outcome="replayed") == REPLAYS
    assert value(samples, appends, category=fin, outcome="conflict") == CONFLICTS
    assert value(samples, appends, category="unknown", outcome="invalid") == INVALID
    assert total(samples, appends, outcome="error") == 0
    assert total(samples, appends) == (
        SINGLES + BATCHES * BATCH_EVENTS + REPLAYS + CONFLICTS + INVALID
    )
    assert value(samples, "ledger_idempotent_replays_total") == REPLAYS
    assert value(samples, "ledger_conflicts_total") == CONFLICTS

    # One observation per append request that reached the committer.
    requests = SINGLES + BATCHES + REPLAYS + CONFLICTS
    assert value(samples, "ledger_append_batch_size_count") == requests
    assert value(samples, "ledger_append_batch_size_sum") == (
        SINGLES + BATCHES * BATCH_EVENTS + REPLAYS + CONFLICTS
    )
    assert value(samples, "ledger_append_batch_size_bucket", le="1.0") == (
        SINGLES + REPLAYS + CONFLICTS
    )

    failures = "ledger_auth_failures_total"
    for reason, count in AUTH_401.items():
        assert value(samples, failures, reason=reason) == count, reason
    assert value(samples, failures, reason="forbidden") == FORBIDDEN
    assert total(samples, failures) == sum(AUTH_401.values()) + FORBIDDEN

    # HTTP metrics: labelled by route template and status class, never by a raw path.
    reqs = "http_requests_total"
    post = {"method": "POST", "route": "/v1/events"}
    assert value(samples, reqs, **post, status_class="2xx") == SINGLES + REPLAYS
    assert value(samples, reqs, **post, status_class="4xx") == (
        CONFLICTS + INVALID + sum(AUTH_401.values()) + FORBIDDEN
    )
    assert value(samples, reqs, method="POST", route="/v1/events/batch", status_class="2xx") == (
        BATCHES
    )
    by_seq = {"method": "GET", "route": "/v1/events/{seq}", "status_class": "2xx"}
    assert value(samples, reqs, **by_seq) == len(READ_SEQS)
    assert value(samples, reqs, method="GET", route="/v1/events", status_class="2xx") == LISTS
    search = {"method": "POST", "route": "/v1/events/search", "status_class": "2xx"}
    assert value(samples, reqs, **search) == SEARCHES
    assert value(samples, reqs, method="GET", route="unmatched", status_class="4xx") == UNMATCHED
    duration = "http_request_duration_seconds_count"
    assert value(samples, duration, **by_seq) == len(READ_SEQS)
    assert value(samples, duration, **post, status_class="2xx") == SINGLES + REPLAYS
    assert value(samples, "http_request_duration_seconds_bucket", **by_seq, le="+Inf") == 3
    assert value(samples, "http_request_duration_seconds_sum", **by_seq) > 0
    for name in (reqs, "http_request_duration_seconds_count"):
        routes = label_values(samples, name, "route")
        assert routes, name
        assert routes <= ROUTE_TEMPLATES | {"unmatched"}, f"raw paths as labels: {routes}"
        assert label_values(samples, name, "status_class") <= {"2xx", "3xx", "4xx", "5xx"}

    # Database statements are timed by kind (never by SQL text).
    ops = label_values(samples, "database_query_duration_seconds_count", "operation")
    assert {"SELECT", "INSERT"} <= ops
    assert ops <= {"SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "BEGIN", "OTHER"}
    assert total(samples, "database_query_duration_seconds_count", operation="INSERT") > 0


def _assert_ledger_state(samples: Samples, ledger: Ledger) -> None:
    assert value(samples, "ledger_database_up") == 1
    assert value(samples, "ledger_log_size") == ledger.log.size()


# --- tests --------------------------------------------------------------------------------------


def _check_jobs(server: LiveServer, settings: Settings) -> None:
    """Checkpoint, verification and retention gauges appear once those things happened."""
    _, before, _ = scrape(server)
    for name in (
        "ledger_seconds_since_last_checkpoint",
        "ledger_last_verification_success",
        "ledger_last_verification_timestamp_seconds",
    ):
        assert (name, frozenset()) not in before, name
    assert value(before, "ledger_checkpoint_size") == 0
    assert value(before, "ledger_checkpoint_lag_entries") == value(before, "ledger_log_size") > 0

    ledger = Ledger.open(settings)
    try:
        made = ledger.log.checkpoint()
        assert made is not None
        jobs = {job.name: job for job in default_jobs(ledger)}
        runs_here = REGISTRY.get_sample_value("ledger_retention_runs_total") or 0.0
        started = time.time()
        assert run_job(ledger, jobs["verify"]) == RAN
        assert run_job(ledger, jobs["retention"]) == RAN  # appends a ledger_operations entry
        _, after, _ = scrape(server)
        _assert_ledger_state(after, ledger)
        size = ledger.log.size()
    finally:
        ledger.close()
    assert value(after, "ledger_checkpoint_size") == made.tree_size
    assert value(after, "ledger_checkpoint_lag_entries") == size - made.tree_size == 1
    assert 0 <= value(after, "ledger_seconds_since_last_checkpoint") < 60
    assert value(after, "ledger_last_verification_success") == 1
    assert abs(value(after, "ledger_last_verification_timestamp_seconds") - started) < 60
    for job in ("verify", "retention"):
        ts = value(after, "ledger_job_last_run_timestamp_seconds", scheduled_job=job)
        assert abs(ts - started) < 60, job
    # Retention counters belong to the process that ran the job (this one), not the server.
    assert total(after, "ledger_retention_runs_total") == 0
    assert REGISTRY.get_sample_value("ledger_retention_runs_total") == runs_here + 1


@pytest.mark.timeout(120)
def test_metrics_single_worker(server_factory: Any, settings: Settings) -> None:
    server: ObservedServer = server_factory(workers=1)
    _drive(server)
    text, samples, types = scrape(server)
    _assert_traffic(samples, types)
    ledger = Ledger.open(settings)
    try:
        _assert_ledger_state(samples, ledger)
    finally:
        ledger.close()
    # A scrape sees the scrapes before it: /metrics is served and counted like any route.
    _, again, _ = scrape(server)
    scrapes = {"method": "GET", "route": "/metrics", "status_class": "2xx"}
    assert value(again, "http_requests_total", **scrapes) == (
        value(samples, "http_requests_total", **scrapes) + 1
    )
    # No label value is a raw path of a request that was sent.
    assert "/v1/events/0" not in text
    assert "/v1/events/1" not in text
    _check_jobs(server, settings)
    # Labelled as /openapi.json names the route, not as Starlette does ("/tlog/tile/{path:path}").
    # (After the jobs' checks: a tile read signs a first checkpoint.)
    for _ in range(2):  # a full tile the log has not got yet
        r = httpx.get(server.url + "/tlog/tile/0/000", headers=server.headers("auditor"))
        assert r.status_code == 404
    _, samples, _ = scrape(server)
    tiles = {"method": "GET", "route": "/tlog/tile/{path}", "status_class": "4xx"}
    assert value(samples, "http_requests_total", **tiles) == 2
    assert label_values(samples, "http_requests_total", "route") <= ROUTE_TEMPLATES | {"unmatched"}


def _served_by(log_dir: Path, route: str) -> set[int]:
    """Workers (pids) whose ``performance.<pid>.log`` has a request of ``route``."""
    return {
        int(path.name.split(".")[1])
        for path in log_dir.glob("performance.*.log")
        if any(
            json.loads(line).get("route") == route
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    }


def _assert_per_worker(samples: Samples, workers: set[int]) -> None:
    """Process and pool metrics: one series per live worker, no other pid."""
    pids = {str(pid) for pid in workers}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert label_values(samples, name, "pid") == pids, name
        assert all(v > 0 for (n, _), v in samples.items() if n == name), name
    assert label_values(samples, "ledger_db_pool_max_connections", "pid") == pids
    # The ledger's state is collected once per scrape, by the worker that answers.
    assert ("ledger_log_size", frozenset()) in samples


@pytest.mark.timeout(180)
def test_metrics_two_workers_report_totals(
    server_factory: Any, settings: Settings, tmp_path: Path
) -> None:
    server: ObservedServer = server_factory(workers=2)
    assert server.process is not None
    supervisor = server.process.pid
    # The supervisor's own directory for its workers' metric files: fresh, private.
    (directory,) = Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}{supervisor}-*")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert not (tmp_path / "workdir" / ".prometheus-multiproc").exists()
    logs = tmp_path / "logs"
    _drive(server, fresh_connections=True)
    workers = set(children_of(supervisor))
    assert len(workers) == 2
    # Both workers took their share of the counted traffic, so the totals below are sums.
    assert _served_by(logs, "/v1/events") == workers

    # Every scrape, whichever worker answers it, reports the totals of both; keep scraping
    # (fresh connections) until both workers have answered at least one.
    scrapes = 0
    while scrapes < 6 or (len(_served_by(logs, "/metrics")) < 2 and scrapes < 100):
        _, samples, types = scrape(server)
        _assert_traffic(samples, types)
        _assert_per_worker(samples, workers)
        scrapes += 1
    assert _served_by(logs, "/metrics") == workers, f"one worker answered all {scrapes} scrapes"
    assert list(directory.glob("*.db")), "workers write their metric files there"
    _check_jobs(server, settings)

    # A worker dies: the supervisor drops its live gauges; its counters stay in the totals.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = set(children_of(supervisor))
        if len(now) == 2 and victim not in now:
            _, samples, types = scrape(server)
            pids = label_values(samples, "ledger_db_pool_max_connections", "pid")
            if pids == {str(pid) for pid in now}:  # the replacement has opened its ledger
                break
        assert time.monotonic() < deadline, "no replacement worker reporting within 60 s"
        time.sleep(0.1)
    assert not list(directory.glob(f"gauge_live*_{victim}.db"))
    assert list(directory.glob(f"counter_{victim}.db"))
    _assert_traffic(samples, types)
    _assert_per_worker(samples, now)

    server.stop()
    assert not directory.exists(), "the supervisor removes its directory when it stops"


def test_worker_metrics_directory_is_fresh_private_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inherited PROMETHEUS_MULTIPROC_DIR (it may hold anything: even the SQLite ledger) is
    neither used nor touched; directories of supervisors that are gone are removed at start,
    those of running ones are not, nor those of a gone supervisor whose workers still run
    (orphans shutting down may still write to them)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    inherited = tmp_path / "shared"
    inherited.mkdir()
    precious = [inherited / "audit-ledger.sqlite3", inherited / "counter_11.db"]
    for path in precious:
        path.write_text("keep me", encoding="utf-8")
    monkeypatch.setenv(MULTIPROC_ENV, str(inherited))
    dead_pid, dead_worker = _an_ended_pid(), _an_ended_pid()
    stale = tmp_path / f"{DIRECTORY_PREFIX}{dead_pid}-abc"
    running = tmp_path / f"{DIRECTORY_PREFIX}{os.getppid()}-def"
    orphaned = tmp_path / f"{DIRECTORY_PREFIX}{dead_pid}-ghi"
    for path, worker in ((stale, dead_worker), (running, dead_worker), (orphaned, os.getpid())):
        path.mkdir()
        (path / f"counter_{worker}.db").write_bytes(b"\0" * 8)

    with worker_metrics_directory() as directory:
        assert os.environ[MULTIPROC_ENV] == str(directory)
        assert directory.parent == tmp_path
        assert directory.name.startswith(f"{DIRECTORY_PREFIX}{os.getpid()}-")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert list(directory.iterdir()) == []
        assert not stale.exists()
        assert running.exists()
        assert orphaned.exists()
    assert not directory.exists()
    assert os.environ[MULTIPROC_ENV] == str(inherited)
    assert all(path.read_text(encoding="utf-8") == "keep me" for path in precious)


def _an_ended_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.timeout(120)
def test_unreachable_database_is_a_gauge_not_a_failed_scrape(
    server_factory: Any, settings: Settings
) -> None:
    """What AuditLedgerDatabaseUnreachable watches: the scrape still answers, up = 0."""
    server: ObservedServer = server_factory(workers=1)
    _, samples, _ = scrape(server)
    assert value(samples, "ledger_database_up") == 1
    drop_pg_database(settings.database_url.rsplit("/", 1)[-1])
    _, samples, types = scrape(server)
    assert types["ledger_database_up"] == "gauge"
    assert value(samples, "ledger_database_up") == 0
    assert ("ledger_log_size", frozenset()) not in samples
    assert value(samples, "http_requests_total", method="GET", route="/metrics", status_class="2xx")
    r = httpx.get(server.url + "/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "unreachable"
