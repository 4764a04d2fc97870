"""SIEM forwarding (issue #15 item 1) against a real rsyslog on loopback: RFC 5424 over TCP with
octet counting (RFC 6587) and over TLS (RFC 5425, rsyslog's gtls driver); a receiver that goes
away and comes back loses nothing while the buffer has room; drops are counted exactly when it
has none; a burst of 50,000 lines; and nothing secret in what a real service forwards."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from audit_ledger.observability.loggers import get_logger
from audit_ledger.observability.logging import configure_logging
from audit_ledger.observability.syslog import FACILITY_LOG_AUDIT, SyslogForwarder
from audit_ledger.settings import Settings
from tests.support.factories import event
from tests.support.polling import wait_until
from tests.support.rsyslog import Rsyslog, needs_gtls, needs_rsyslog
from tests.support.servers import make_server

pytestmark = needs_rsyslog

Forwarding = Callable[..., SyslogForwarder]


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    receiver = Rsyslog(tmp_path / "rsyslog")
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def forwarding(tmp_path: Path) -> Iterator[Forwarding]:
    """Configure this process's logging with a forwarder; restore it afterwards."""
    root = logging.getLogger()
    level = root.level

    def configure(url: str, **options: Any) -> SyslogForwarder:
        configure_logging(tmp_path / "logs", environment="ci-test", syslog_url=url, **options)
        (forwarder,) = [h for h in root.handlers if isinstance(h, SyslogForwarder)]
        return forwarder

    try:
        yield configure
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_audit_ledger", False) or isinstance(handler, SyslogForwarder):
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        logging.getLogger("uvicorn.access").disabled = False
        structlog.reset_defaults()


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _json(msg: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(msg)
    return loaded


def _tiers_arrive(receiver: Rsyslog, forwarding: Forwarding, **options: Any) -> None:
    forwarder = forwarding(receiver.url, **options)
    get_logger("security").warning("authentication_failed", reason="unknown_token")
    get_logger("application").info("event_appended", seq=1)  # application: not forwarded
    get_logger("application").error("append_failed", error="StorageError")  # error tier
    logging.getLogger("audit_ledger.application.scheduler").info("job verify tick 7: ok")
    logging.getLogger("some.library").warning("not ours, not an error")  # not forwarded
    assert forwarder.flush(timeout=10)
    receiver.wait_for(3)
    got = receiver.settle(quiet=0.3)
    events = [(r.msgid, _json(r.msg)["event"]) for r in got]
    assert events == [
        ("security", "authentication_failed"),
        ("application", "append_failed"),
        ("application", "job verify tick 7: ok"),
    ]
    # PRI = facility * 8 + severity (RFC 5424 §6.2.1): warning 4, error 3, informational 6.
    assert [r.pri for r in got] == [FACILITY_LOG_AUDIT * 8 + s for s in (4, 3, 6)]
    assert {r.app for r in got} == {"audit-ledger"}
    assert {r.procid for r in got} == {str(os.getpid())}
    for r in got:
        line = _json(r.msg)
        assert line["service"] == "audit-ledger"
        assert line["environment"] == "ci-test"
    # The forwarded line is the tier file's line, byte for byte.
    security_file = (receiver.directory.parent / "logs" / "security.log").read_text("utf-8")
    assert got[0].msg == security_file.strip()


def test_plain_tcp_delivers_the_chosen_tiers(rsyslog: Rsyslog, forwarding: Forwarding) -> None:
    rsyslog.start()
    _tiers_arrive(rsyslog, forwarding)


@needs_gtls
def test_tls_delivers_the_chosen_tiers(tmp_path: Path, forwarding: Forwarding) -> None:
    receiver = Rsyslog(tmp_path / "rsyslog", tls=True)
    try:
        receiver.start()
        _tiers_arrive(receiver, forwarding, syslog_ca_file=receiver.ca_file)
    finally:
        receiver.stop()


@needs_gtls
def test_tls_refuses_a_receiver_it_cannot_authenticate(
    tmp_path: Path, forwarding: Forwarding
) -> None:
    """Another CA's certificate: nothing is sent in clear or to the wrong party; lines wait."""
    receiver = Rsyslog(tmp_path / "rsyslog", tls=True)
    other = Rsyslog(tmp_path / "other", tls=True)  # only for its (different) CA file
    try:
        receiver.start()
        forwarder = forwarding(receiver.url, syslog_ca_file=other.ca_file)
        sent = _metric("ledger_syslog_messages_sent_total")
        get_logger("security").warning("authentication_failed", reason="unknown_token")
        time.sleep(1.0)
        assert forwarder.queued() == 1
        assert _metric("ledger_syslog_messages_sent_total") == sent
        assert receiver.received() == []
    finally:
        receiver.stop()


def _numbered(count: int, start: int = 0) -> None:
    log = get_logger("security")
    for n in range(start, start + count):
        log.warning("probe", n=n)


def _numbers(receiver: Rsyslog) -> list[int]:
    return [int(_json(r.msg)["n"]) for r in receiver.received()]


def test_a_receiver_that_goes_away_and_comes_back_loses_nothing(
    rsyslog: Rsyslog, forwarding: Forwarding
) -> None:
    rsyslog.start()
    forwarder = forwarding(rsyslog.url, syslog_queue_size=1000)
    _numbered(10)
    rsyslog.wait_for(10)
    rsyslog.stop()
    _numbered(300, start=10)  # the receiver is down: these wait in the buffer
    time.sleep(0.5)
    assert forwarder.queued() == 300
    rsyslog.start()
    rsyslog.wait_for(310, timeout=30)
    assert sorted(set(_numbers(rsyslog))) == list(range(310))
    assert forwarder.queued() == 0


def test_a_full_buffer_drops_and_counts_exactly(rsyslog: Rsyslog, forwarding: Forwarding) -> None:
    """Nobody listens (yet): 100 lines fit, the next 50 are dropped and counted, then the 100
    arrive once the receiver is up."""
    dropped, sent = (
        _metric("ledger_syslog_messages_dropped_total"),
        _metric("ledger_syslog_messages_sent_total"),
    )
    forwarder = forwarding(rsyslog.url, syslog_queue_size=100)
    _numbered(150)
    assert _metric("ledger_syslog_messages_dropped_total") - dropped == 50
    assert forwarder.queued() == 100
    assert _metric("ledger_syslog_messages_queued") >= 100
    rsyslog.start()
    rsyslog.wait_for(100, timeout=30)
    assert forwarder.flush(timeout=10)
    rsyslog.settle(quiet=0.3)
    assert sorted(_numbers(rsyslog)) == list(range(100))
    assert _metric("ledger_syslog_messages_sent_total") - sent == 100
    assert _metric("ledger_syslog_messages_dropped_total") - dropped == 50


def test_a_burst_of_50000_lines(rsyslog: Rsyslog, forwarding: Forwarding) -> None:
    rsyslog.start()
    forwarder = forwarding(rsyslog.url, syslog_queue_size=60_000)
    started = time.perf_counter()
    _numbered(50_000)
    logged = time.perf_counter() - started
    rsyslog.wait_for(50_000, timeout=30)
    delivered = time.perf_counter() - started
    numbers = _numbers(rsyslog)
    assert sorted(set(numbers)) == list(range(50_000))
    assert forwarder.queued() == 0
    print(f"50,000 lines: logged in {logged:.2f} s, all received after {delivered:.2f} s")


# --- a real service ------------------------------------------------------------------------------

CANARY_DATA = "canary-plaintext-7f3a9c"
CANARY_REF = "canary-subject-5d21e0"
CANARY_TOKEN = "canary-token-9b8e77"


@pytest.mark.process
@needs_gtls
def test_a_serving_process_forwards_no_secret(settings: Settings, tmp_path: Path) -> None:
    """A real uvicorn with TLS forwarding: appends carrying a canary payload and subject ref, a
    request with a canary token, a search by the canary ref; the security line, the read's
    operation line and the scheduler's lines arrive, with ``service`` and ``environment``, and
    no canary in anything received or written."""
    receiver = Rsyslog(tmp_path / "rsyslog", tls=True)
    receiver.start()
    server = make_server(settings, tmp_path)
    server.extra_env.update(
        AUDIT_LEDGER_SYSLOG_URL=receiver.url,
        AUDIT_LEDGER_SYSLOG_CA_FILE=str(receiver.ca_file),
        AUDIT_LEDGER_SYSLOG_TIERS="security,error,scheduler,application,performance",
        AUDIT_LEDGER_ENVIRONMENT="staging",
        AUDIT_LEDGER_SCHEDULER_ENABLED="true",
    )
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(3):
                body = event("data_privacy_events", data_type=CANARY_DATA, user_id=CANARY_REF)
                r = client.post("/v1/events", json=body, headers=server.headers("writer"))
                assert r.status_code in (200, 201), r.text
            bad = client.get("/v1/events", headers={"Authorization": f"Bearer {CANARY_TOKEN}"})
            assert bad.status_code == 401
            # A read searched by the canary identifier: recorded as a ledger operation.
            search = {"category": "data_privacy_events", "user_id": CANARY_REF}
            found = client.post(
                "/v1/events/search", json=search, headers=server.headers("privacy_officer")
            )
            assert found.status_code == 200, found.text
            assert CANARY_DATA in found.text  # the reader sees it; the SIEM must not
            got = wait_until(
                lambda: [
                    r
                    for r in receiver.received()
                    if _json(r.msg).get("event") == "authentication_failed"
                ],
                timeout=20,
                message="the security line forwarded",
            )
        assert got[0].msgid == "security"
        received = receiver.settle(quiet=1.0)
        lines = [_json(r.msg) for r in received]
        assert {line["service"] for line in lines} == {"audit-ledger"}
        assert {line["environment"] for line in lines} == {"staging"}
        assert any(r.msgid == "performance" for r in received)
        assert any("job " in str(line.get("event")) for line in lines), "scheduler lines"
        operations = [line for line in lines if line["event"] == "ledger_operation"]
        assert {"event_type": "records_read"}.items() <= operations[-1].items()
        assert isinstance(operations[-1]["seq"], int)
        raw = receiver.raw()
        written = b"".join(p.read_bytes() for p in (tmp_path / "logs").glob("*.log*"))
        for canary in (CANARY_DATA, CANARY_REF, CANARY_TOKEN):
            assert canary.encode() not in raw
            assert canary.encode() not in written
    finally:
        server.stop()
        receiver.stop()
