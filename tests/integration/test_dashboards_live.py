"""Every dashboard query (deploy/grafana/*.json) against a real Prometheus scraping a real
``audit-ledger serve`` that has taken appends and run its jobs: each query is accepted, and
each one over metrics such a service has returns data (witness and SIEM panels stay empty
without witnesses or a syslog receiver, and are only checked to be accepted); and no alert rule
is firing or pending for that healthy service."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from audit_ledger.settings import Settings
from tests.support.factories import event
from tests.support.polling import wait_until
from tests.support.prometheus import PROMETHEUS, Prometheus
from tests.support.servers import make_server
from tests.unit.observability.test_dashboards import panel_queries

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt: prometheus)"),
]
#: Metrics that a service without witnesses, syslog receiver, failures or 5xx does not have.
MAY_BE_EMPTY = (
    "ledger_witness",
    "ledger_syslog",
    "ledger_verification_failures_total",
    "ledger_retention_payloads_purged_total",
    "ledger_retention_keys_destroyed_total",
    "ledger_auth_failures_total",
    'status_class="5xx"',
    "ledger_database_replication_lag_seconds",  # no replica here
    "database_slow_queries_total",  # nothing slower than a second, one hopes
)
#: PostgreSQL-only facts: absent on SQLite.
POSTGRES_ONLY = ("ledger_database_connections",)


def test_every_panel_query_runs_against_a_scraped_service(
    settings: Settings, tmp_path: Path
) -> None:
    server = make_server(settings, tmp_path)
    server.extra_env.update(
        AUDIT_LEDGER_SCHEDULER_ENABLED="true",
        AUDIT_LEDGER_CHECKPOINT_INTERVAL_SECONDS="1",
        AUDIT_LEDGER_VERIFY_RECENT_INTERVAL_SECONDS="1",
    )
    server.start()
    prometheus = None
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(10):
                r = client.post("/v1/events", json=event(), headers=server.headers("writer"))
                assert r.status_code in (200, 201), r.text
        prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{server.port}")
        # Rates need two samples in the window: wait for a few scrapes after the appends.
        wait_until(
            lambda: (prometheus.value("count_over_time(ledger_log_size[1m])") or 0) >= 4,
            timeout=60,
            message="four scrapes",
        )
        wait_until(
            lambda: (
                (prometheus.value("max(ledger_checkpoint_size)") or 0) >= 10
                and prometheus.value("max(ledger_last_incremental_verification_success)") == 1
            ),
            timeout=60,
            message="checkpoint and incremental verification scraped",
        )
        empty = []
        for board, title, query in panel_queries():
            answer = prometheus.query(query)
            assert answer["status"] == "success", (board, title, answer)
            optional = MAY_BE_EMPTY + (
                POSTGRES_ONLY if settings.database_url.startswith("sqlite") else ()
            )
            if not answer["data"]["result"] and not any(m in query for m in optional):
                empty.append((board, title, query))
        assert empty == []
        # And a healthy service raises nothing, not even pending: e.g. a rule selecting
        # {job="retention"} never matched (Prometheus owns the "job" label) and so its absent()
        # branch was pending on every healthy service.
        alerts = httpx.get(prometheus.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        assert [a["labels"]["alertname"] for a in alerts] == []
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()
