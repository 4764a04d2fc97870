"""A tampered row is alerted by a real Prometheus scraping a real service (issue #15 "Show"):
``audit-ledger serve`` with its scheduler (the incremental verification every 2 s instead of
60 s), a Prometheus server evaluating deploy/audit-ledger-rules.yml every second, and a row
changed by a superuser; ``AuditLedgerTamperDetected`` must be firing within 2 minutes (with the
production intervals: one minute for the job, plus scrape and evaluation intervals), and the
error line that says where must have reached the SIEM (a real rsyslog)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from audit_ledger.settings import Settings
from audit_ledger.storage.engine import WRITE_OPTION, create_engine_for_url
from tests.support.factories import event
from tests.support.polling import wait_until
from tests.support.prometheus import PROMETHEUS, Prometheus
from tests.support.rsyslog import RSYSLOGD, Rsyslog
from tests.support.servers import LiveServer, make_server
from tests.support.tamper import TABLES, flip

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt: prometheus)"),
]


@pytest.fixture
def siem(tmp_path: Path) -> Iterator[Rsyslog | None]:
    """The SIEM the tamper line is forwarded to (plain TCP), when rsyslog is installed."""
    if RSYSLOGD is None:
        yield None
        return
    receiver = Rsyslog(tmp_path / "rsyslog").start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def server(settings: Settings, tmp_path: Path, siem: Rsyslog | None) -> Iterator[LiveServer]:
    live = make_server(settings, tmp_path)
    live.extra_env.update(
        AUDIT_LEDGER_SCHEDULER_ENABLED="true",
        AUDIT_LEDGER_CHECKPOINT_INTERVAL_SECONDS="1",
        AUDIT_LEDGER_VERIFY_RECENT_INTERVAL_SECONDS="2",
    )
    if siem is not None:
        live.extra_env["AUDIT_LEDGER_SYSLOG_URL"] = siem.url  # default tiers
    live.start()
    try:
        yield live
    finally:
        live.stop()


def _tamper(settings: Settings, seq: int) -> None:
    """What a database superuser can do: guards out of the way, one leaf byte changed."""
    engine = create_engine_for_url(settings.database_url)
    try:
        # The live service appends meanwhile (checkpoints every second): on SQLite a
        # transaction that reads first and writes later can be refused at once ("database is
        # locked", no busy wait), so take the write lock first, as the service's writers do.
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            if engine.dialect.name == "sqlite":
                names = conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                ).scalars()
                for name in list(names):
                    conn.execute(text(f'DROP TRIGGER "{name}"'))
            else:
                for table in TABLES:
                    conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER ALL"))
            leaf = bytes(
                conn.execute(
                    text("SELECT leaf FROM entries WHERE seq = :s"), {"s": seq}
                ).scalar_one()
            )
            conn.execute(
                text("UPDATE entries SET leaf = :l WHERE seq = :s"),
                {"l": flip(leaf, len(leaf) // 2), "s": seq},
            )
    finally:
        engine.dispose()


def test_a_tampered_row_is_alerted_within_two_minutes(
    server: LiveServer, settings: Settings, tmp_path: Path, siem: Rsyslog | None
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(20):
            r = client.post("/v1/events", json=event(), headers=server.headers("writer"))
            assert r.status_code in (200, 201), r.text
    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{server.port}")
    try:
        # Healthy first: scraped, verified, nothing firing.
        wait_until(
            lambda: prometheus.value("ledger_last_incremental_verification_success") == 1,
            timeout=60,
            message="a passing incremental verification scraped",
        )
        assert not prometheus.firing("AuditLedgerTamperDetected")
        tampered_at = time.monotonic()
        _tamper(settings, seq=5)
        wait_until(
            lambda: prometheus.firing("AuditLedgerTamperDetected"),
            timeout=120,
            interval=0.5,
            message="AuditLedgerTamperDetected firing",
        )
        elapsed = time.monotonic() - tampered_at
        print(f"tamper alert firing {elapsed:.1f} s after the row was changed")
        assert elapsed < 120
        # The error-tier line, forwarded: the SIEM has it too, with where and why.
        if siem is not None:
            forwarded = wait_until(
                lambda: [
                    json.loads(r.msg)
                    for r in siem.received()
                    if '"verification_failed"' in r.msg and '"incremental"' in r.msg
                ],
                timeout=30,
                message="the tamper line forwarded",
            )
            assert forwarded[0]["level"] == "error"
            assert forwarded[0]["problem"].startswith("seq 5:")
    finally:
        prometheus.stop()
