"""The syslog forwarder's formats and settings: RFC 5424 header fields, RFC 6587 octet counting,
``AUDIT_LEDGER_SYSLOG_*`` parsing (one clear error, never the value), tier selection, and that
``emit`` never waits for the network (the receiver side is tested against a real rsyslog in
``tests/integration/test_syslog_rsyslog.py``)."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator

import pytest

from audit_ledger.errors import ConfigError
from audit_ledger.observability.syslog import (
    SyslogForwarder,
    SyslogTarget,
    frame,
    parse_syslog_url,
    parse_tiers,
    rfc5424,
)
from audit_ledger.settings import load_settings

# RFC 5424 §6 ABNF, header part: PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP
# MSGID SP STRUCTURED-DATA [SP MSG]
HEADER = re.compile(
    rb"<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,6}Z) ([\x21-\x7e]{1,255}) "
    rb"([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32}) - (.*)\Z",
    re.DOTALL,
)


def test_rfc5424_message_fields() -> None:
    msg = rfc5424(
        created=1_800_000_000.25,
        severity=4,
        hostname="host a\tb",
        procid=123,
        msgid="security",
        message='{"event":"x"}',
    )
    m = HEADER.match(msg)
    assert m, msg
    assert m.group(1) == b"108"  # facility 13 (log audit) * 8 + warning (4)
    assert m.group(2) == b"2027-01-15T08:00:00.250000Z"
    assert m.group(3) == b"hostab"  # spaces and controls are not PRINTUSASCII
    assert (m.group(4), m.group(5), m.group(6)) == (b"audit-ledger", b"123", b"security")
    assert m.group(7) == b'{"event":"x"}'


def test_empty_header_fields_are_nilvalue() -> None:
    msg = rfc5424(created=0, severity=6, hostname="", procid=1, msgid=" ", message="m")
    assert msg.split(b" ")[2:6] == [b"-", b"audit-ledger", b"1", b"-"]


@pytest.mark.parametrize("body", [b"", b"x", b"\xe2\x82\xac 12 chars", b"a\nb" * 1000])
def test_octet_counting_frame(body: bytes) -> None:
    framed = frame(body)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(body) == len(rest)
    assert rest == body


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("tcp://127.0.0.1:514", SyslogTarget("127.0.0.1", 514, False)),
        ("tls://siem.example.com:6514", SyslogTarget("siem.example.com", 6514, True)),
        ("tls://[::1]:6514/", SyslogTarget("::1", 6514, True)),
    ],
)
def test_syslog_urls(url: str, target: SyslogTarget) -> None:
    assert parse_syslog_url(url) == target


@pytest.mark.parametrize(
    "url",
    [
        "udp://h:514",
        "http://h:514",
        "tcp://h",
        "tcp://:514",
        "tcp://h:0",
        "tcp://h:99999",
        "tcp://user:secret-pw@h:514",
        "tcp://h:514/path",
        "tcp://h:514?x=1",
        "h:514",
    ],
)
def test_bad_syslog_urls_are_one_line_config_errors_without_the_value(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(syslog_url=url)
    text = str(caught.value)
    assert "AUDIT_LEDGER_SYSLOG_URL" in text
    assert "\n" not in text
    assert "secret-pw" not in text


def test_tiers() -> None:
    assert parse_tiers("security, error,scheduler") == {"security", "error", "scheduler"}
    assert parse_tiers("") == frozenset()
    with pytest.raises(ConfigError, match="AUDIT_LEDGER_SYSLOG_TIERS: unknown tier"):
        load_settings(syslog_tiers="security,audit")


def test_settings_defaults() -> None:
    s = load_settings()
    assert s.syslog_url == ""
    assert s.syslog_ca_file is None
    assert parse_tiers(s.syslog_tiers) == {"security", "error", "scheduler"}
    assert (s.log_max_bytes, s.log_backup_count) == (100 * 1024 * 1024, 10)
    with pytest.raises(ConfigError, match="AUDIT_LEDGER_ENVIRONMENT"):
        load_settings(environment="prod ction\n")


@pytest.fixture
def blackhole() -> Iterator[socket.socket]:
    """A listener that accepts nothing (backlog full soon): sends would block on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    yield sock
    sock.close()


def _record(n: int, name: str = "audit_ledger.security") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, f"line {n}", None, None)


def test_emit_never_waits_for_the_receiver(blackhole: socket.socket) -> None:
    port = blackhole.getsockname()[1]
    forwarder = SyslogForwarder(
        SyslogTarget("127.0.0.1", port, False), tiers=frozenset({"security"}), capacity=50_000
    )
    try:
        started = time.perf_counter()
        for n in range(20_000):
            forwarder.handle(_record(n))
        elapsed = time.perf_counter() - started
        # 20,000 records, none of which the receiver reads: the caller only buffers them.
        assert elapsed < 2.0, elapsed
        assert forwarder.queued() > 0
    finally:
        forwarder.close()


def test_tier_filter_selects_each_record_once() -> None:
    forwarder = SyslogForwarder(
        SyslogTarget("127.0.0.1", 9, False),
        tiers=frozenset({"application", "scheduler", "error"}),
        capacity=100,
    )
    try:
        records = [
            _record(1, "audit_ledger.application.scheduler"),  # application and scheduler
            _record(2, "audit_ledger.security"),
            _record(3, "audit_ledger.applicationx"),  # a prefix is not a tier
        ]
        error = _record(4, "some.library")
        error.levelno = logging.ERROR
        for record in [*records, error]:
            forwarder.handle(record)
        assert forwarder.queued() == 2
    finally:
        forwarder.close()
