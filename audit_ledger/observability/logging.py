"""Structured JSON logs (structlog) to stdout and to rotating files per operational tier.

Tiers and how long their rotated files are kept (the QuickCart plan): application 30 d,
security 90 d, performance 7 d, error 60 d; the audit tier is the ledger itself. Files rotate at
midnight UTC and at a size (:mod:`.rotation`); :func:`cleanup_rotated` (a scheduled job)
deletes rotated files past their tier's retention.

What is logged is chosen field by field — seq, category, event type, correlation id, route
template, status — never payload fields, tokens, keys, raw refs, query strings or bodies. Every
line is one JSON object, so a newline or control character in a client-supplied string is
escaped and cannot forge a line. Every line carries ``service`` and ``environment``; the tiers
chosen by ``AUDIT_LEDGER_SYSLOG_TIERS`` are also forwarded to a SIEM (:mod:`.syslog`), as the
same lines.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from audit_ledger.observability import loggers
from audit_ledger.observability.lines import LINE, LineStream, LineWriter
from audit_ledger.observability.loggers import LOGGER_PREFIX
from audit_ledger.observability.rotation import SizeAndDayRotatingFileHandler
from audit_ledger.observability.syslog import DEFAULT_TIERS, SyslogForwarder, install_forwarder

TIER_RETENTION_DAYS = {"application": 30, "security": 90, "performance": 7, "error": 60}
#: Tiers whose rotated files are also capped by count (``log_backup_count``): operational noise.
#: The security and error tiers are compliance evidence (PCI DSS 10.5.1) and go by age only.
COUNT_CAPPED_TIERS = frozenset({"application", "performance"})
SERVICE = "audit-ledger"
_CORRELATION = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
_configured = False


def correlation_id_from(header: str | None) -> str:
    """The client's ``X-Correlation-ID`` if it is a plain token, else a fresh one."""
    if header is not None and _CORRELATION.match(header):
        return header
    return _FRESH_IDS.next()


class _RandomIds:
    """Fresh correlation ids, 16 random bytes each (as random as a uuid4), taken from one
    ``os.urandom`` call per 256 ids.

    A system call on the event loop lets the committing thread take the interpreter lock, and
    the loop then waits for it to give it back: measured in the service (issue #16), one
    ``os.urandom`` per request cost more than a tenth of single-append throughput.
    """

    _BATCH = 256

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start afresh: in a forked child, which must not repeat its parent's ids."""
        self._lock = threading.Lock()
        self._pool = b""
        self._next = 0

    def next(self) -> str:
        with self._lock:
            start = self._next
            if start >= len(self._pool):
                self._pool, start = os.urandom(16 * self._BATCH), 0
            self._next = start + 16
            return self._pool[start : start + 16].hex()


_FRESH_IDS = _RandomIds()
os.register_at_fork(after_in_child=_FRESH_IDS.forget)


class _RenderOnce(structlog.stdlib.ProcessorFormatter):
    """Render a record once, however many handlers (stdout, its tier file, error) emit it.

    Our own (structlog) records arrive rendered already (:func:`_rendered_line`); records of
    other libraries are rendered here, through the same processors.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, LINE, None)
        if line is None:
            line = super().format(record)
            setattr(record, LINE, line)
        return str(line)


def _rendered_line(logger: Any, method: str, line: Any) -> tuple[tuple[str], dict[str, Any]]:
    """Hand the JSON line to the stdlib logger with the line attached to the record, so the
    formatter need not copy the record and render it again (it did, for every line)."""
    return (line,), {"extra": {LINE: line}}


def _file_name(tier: str, per_process: bool) -> str:
    # Several uvicorn workers must not rotate one file (the second rename would delete the
    # first's rotated file), so each worker writes its own.
    return f"{tier}.{os.getpid()}.log" if per_process else f"{tier}.log"


class _PrivateFileHandler(SizeAndDayRotatingFileHandler):
    """A tier file created (and kept) 0600: log lines name principals, routes and seqs, which
    other accounts on the host have no business reading (issue #12)."""

    def _open(self) -> Any:
        # O_APPEND as the stdlib's mode "a"; the mode applies from creation, so the file is
        # never readable by others, and fchmod tightens a file an older version left 0644.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)  # noqa: PTH123


def _ours(handler: Any) -> bool:
    """A handler :class:`LineWriter` may write to directly: one of ours, filtered (if at all)
    by :func:`_quiet_scheduler` alone, which looks at a record's name and level only."""
    return (
        getattr(handler, "_audit_ledger", False)
        and isinstance(handler, LineStream)
        and all(f is _quiet_scheduler for f in handler.filters)
    )


def _identity(environment: str) -> Any:
    """Every line says which service and environment wrote it (the plan's log line fields)."""

    def add(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["service"] = SERVICE
        event["environment"] = environment
        return event

    return add


def configure_logging(
    log_dir: Path | None,
    *,
    per_process: bool = False,
    level: int = logging.INFO,
    environment: str = "local",
    max_bytes: int = 100 * 1024 * 1024,
    backup_count: int = 10,
    syslog_url: str = "",
    syslog_tiers: str = DEFAULT_TIERS,
    syslog_ca_file: Path | None = None,
    syslog_queue_size: int = 10_000,
) -> None:
    """Route structlog and stdlib logging to stdout, the tier files and, with ``syslog_url``,
    a syslog receiver (idempotent)."""
    global _configured  # noqa: PLW0603 - logging is process-global by nature
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _identity(environment),
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        stamper,
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer(), _rendered_line],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = _RenderOnce(processor=structlog.processors.JSONRenderer(), foreign_pre_chain=shared)
    root = logging.getLogger()
    tier_loggers = {
        tier: logging.getLogger(f"{LOGGER_PREFIX}.{tier}") for tier in TIER_RETENTION_DAYS
    }
    for owner in (root, *tier_loggers.values()):
        for handler in list(owner.handlers):
            if getattr(handler, "_audit_ledger", False) or isinstance(handler, SyslogForwarder):
                owner.removeHandler(handler)
                handler.close()
    # stdout and the error tier take every record (the error file from ERROR up); each other
    # tier's file hangs on its own logger ("audit_ledger.<tier>", and so its children), so a
    # record meets only the handlers it is written by.
    stdout = LineStream(sys.stdout)
    stdout.addFilter(_quiet_scheduler)
    placed: list[tuple[logging.Logger, logging.Handler]] = [(root, stdout)]
    if log_dir is not None:
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for tier, logger in tier_loggers.items():
            handler = _PrivateFileHandler(
                log_dir / _file_name(tier, per_process),
                max_bytes=max_bytes,
                keep=backup_count if tier in COUNT_CAPPED_TIERS else None,
            )
            if tier == "error":
                handler.setLevel(logging.ERROR)
                placed.append((root, handler))
            else:
                placed.append((logger, handler))
    for owner, handler in placed:
        handler.setFormatter(formatter)
        handler._audit_ledger = True  # type: ignore[attr-defined]
        owner.addHandler(handler)
    if syslog_url:
        install_forwarder(
            syslog_url,
            tiers=syslog_tiers,
            ca_file=syslog_ca_file,
            capacity=syslog_queue_size,
            formatter=formatter,
        )
    root.setLevel(level)
    # Our own lines, as the chain above renders them, without its cost (lines.py).
    loggers.install(LineWriter({"service": SERVICE, "environment": environment}, stamper, _ours))
    # Every line already says where it comes from (logger name and event): skip what the stdlib
    # would compute for each record — the caller's frame (a stack walk), thread and process.
    logging._srcfile = None  # the documented way to turn off findCaller (see its comment)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's access log prints raw paths with query strings: ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic announces its dialect at INFO on every schema check (each /readyz probe).
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # APScheduler says "executed successfully" for every tick, skipped ones included (the tick
    # check is inside the job): our own line says what ran (jobs.Jobs.run_once).
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    _configured = True


def _quiet_scheduler(record: logging.LogRecord) -> bool:
    """Keep the scheduler's per-tick INFO lines out of stdout (they stay in the tier file and
    are forwarded with the ``scheduler`` tier); its warnings and errors still show."""
    return record.levelno >= logging.WARNING or not record.name.startswith(_SCHEDULER_LOGGER)


_SCHEDULER_LOGGER = f"{LOGGER_PREFIX}.application.scheduler"


def cleanup_rotated(log_dir: Path, now: float | None = None) -> list[Path]:
    """Delete rotated log files older than their tier's retention; return what was deleted."""
    moment = time.time() if now is None else now
    deleted: list[Path] = []
    if not log_dir.is_dir():
        return deleted
    for path in log_dir.iterdir():
        tier = path.name.split(".", 1)[0]
        days = TIER_RETENTION_DAYS.get(tier)
        # Rotated files ("<tier>.log.<date>" / "<tier>.<pid>.log.<date>"), and the live file of
        # a worker that is gone: only its own process would ever rotate it.
        rotated = ".log." in path.name and not path.name.endswith(".log")
        if days is None or not (rotated or _orphaned(path.name)):
            continue
        if moment - path.stat().st_mtime > days * 86_400:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def _orphaned(name: str) -> bool:
    """``<tier>.<pid>.log`` whose process no longer exists (on this host)."""
    parts = name.split(".")
    if len(parts) != 3 or parts[2] != "log" or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False  # a process of another user holds that pid; an absurd pid is not ours
    return False
