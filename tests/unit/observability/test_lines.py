"""Our own lines' direct path (observability/lines.py) writes the bytes structlog's chain writes,
to the handlers the stdlib would call, and leaves what it cannot do to that chain."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_ledger.observability import loggers
from audit_ledger.observability.lines import LineStream, LineWriter
from audit_ledger.observability.loggers import get_logger
from audit_ledger.observability.logging import configure_logging
from audit_ledger.observability.rotation import SizeAndDayRotatingFileHandler

_STAMP = re.compile(r'"timestamp": "[^"]*"')


def _both_ways(log_dir: Path, method: str, event: str, **fields: Any) -> tuple[str, str]:
    """The line written through the direct path, then through structlog's chain."""
    writer = loggers._writer
    assert isinstance(writer, LineWriter)
    path = log_dir / "application.log"
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    logger = get_logger("application")
    getattr(logger, method)(event, **fields)
    loggers.install(None)
    try:
        getattr(logger, method)(event, **fields)
    finally:
        loggers.install(writer)
    new = path.read_text(encoding="utf-8")[len(before) :].splitlines()
    assert len(new) == 2, new
    direct, chained = (_STAMP.sub('"timestamp": "T"', line) for line in new)
    return direct, chained


class _Custom:
    def __repr__(self) -> str:
        return "<custom \u00e9>"


class _Structlogged:
    def __structlog__(self) -> dict[str, int]:
        return {"as": 1}


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.builds(_Custom)
    | st.builds(_Structlogged)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
# The names the chain itself writes are fair game for a caller too: each path must overwrite
# them in place, as the chain's processors do.
_NAMES = st.sampled_from(
    ["service", "environment", "logger", "level", "timestamp", "correlation_id", "exception"]
) | st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True).filter(lambda n: n != "event")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(_NAMES, _VALUES, max_size=6),
    event=st.text(max_size=20),
    method=st.sampled_from(["info", "warning", "error"]),
    bound=st.none() | st.text(max_size=10),
)
def test_the_direct_path_writes_the_chains_bytes(
    logs: Path, fields: dict[str, Any], event: str, method: str, bound: str | None
) -> None:
    if bound is not None:
        structlog.contextvars.bind_contextvars(correlation_id=bound)
    try:
        direct, chained = _both_ways(logs, method, event, **fields)
    finally:
        structlog.contextvars.clear_contextvars()
    assert direct == chained
    json.loads(direct)


def test_an_exception_line_takes_the_chain(logs: Path) -> None:
    try:
        int("not a number")
    except ValueError:
        get_logger("application").error("failed", exc_info=True)
    (line,) = (logs / "application.log").read_text(encoding="utf-8").splitlines()
    assert "ValueError" in json.loads(line)["exception"]
    assert json.loads((logs / "error.log").read_text(encoding="utf-8"))["event"] == "failed"


def test_a_capturing_handler_sees_our_lines_as_records(logs: Path) -> None:
    """A handler that is not ours (a test's capture, the syslog forwarder) gets a record per
    line, carrying the finished line; ours still get the line directly."""
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    capture = Capture(level=logging.WARNING)
    logging.getLogger().addHandler(capture)
    try:
        get_logger("security").info("below_the_capture")
        get_logger("security").warning("auth_failed", reason="unknown")
    finally:
        logging.getLogger().removeHandler(capture)
    get_logger("security").warning("after")  # the route follows the handler's removal
    assert [(r.name, r.levelno) for r in seen] == [("audit_ledger.security", logging.WARNING)]
    assert json.loads(seen[0].getMessage())["reason"] == "unknown"
    written = (logs / "security.log").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in written] == [
        "below_the_capture",
        "auth_failed",
        "after",
    ]


def test_a_logger_filter_sees_every_record(logs: Path) -> None:
    """A filter on a logger on the way can drop a line: such a route goes through the stdlib."""
    tier = logging.getLogger("audit_ledger.application")

    def drop_secret(record: logging.LogRecord) -> bool:
        return "secret" not in record.getMessage()

    tier.addFilter(drop_secret)
    try:
        get_logger("application").info("kept")
        get_logger("application").info("dropped", note="secret")
    finally:
        tier.removeFilter(drop_secret)
    lines = (logs / "application.log").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["kept"]


def test_levels_decide_as_the_stdlib_does(logs: Path) -> None:
    """An error line reaches the error file; a level raised on a tier logger silences it."""
    get_logger("application").info("info_line")
    get_logger("application").error("error_line")
    tier = logging.getLogger("audit_ledger.performance")
    tier.setLevel(logging.WARNING)
    try:
        get_logger("performance").info("silenced")
    finally:
        tier.setLevel(logging.NOTSET)
    errors = (logs / "error.log").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in errors] == ["error_line"]
    assert not (logs / "performance.log").exists()


def test_scheduler_info_stays_off_stdout(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The stdout handler's filter is applied on the direct path too (by name and level)."""
    configure_logging(logs)  # stdout is now capsys's
    get_logger("application.scheduler").info("tick")
    get_logger("application.scheduler").warning("job_failed")
    get_logger("application").info("other")
    out = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert out == ["job_failed", "other"]
    written = (logs / "application.log").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in written] == ["tick", "job_failed", "other"]


class _Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("disk full")


def test_a_failing_stream_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the stdlib's handlers do: a write that fails is reported on stderr, and the caller
    (a request, an append) goes on."""
    stdout = LineStream(_Broken())
    stdout.write_line('{"event": "x"}')
    tier = SizeAndDayRotatingFileHandler(tmp_path / "application.log", max_bytes=1 << 20, keep=2)
    tier.stream = _Broken()
    tier.write_line('{"event": "y"}')
    assert capsys.readouterr().err.count("--- Logging error ---") == 2
