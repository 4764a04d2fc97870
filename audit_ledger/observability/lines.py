"""Our own log lines, built and written without the general-purpose machinery (issue #16).

Every line the service writes about itself (a request, an append, a job's outcome) comes from a
tier logger (:func:`audit_ledger.observability.loggers.get_logger`). Through structlog's
bound-logger layers, its processor chain and the stdlib's ``Logger``/``LogRecord`` dispatch, the
two INFO lines of a single HTTP append cost about 100 µs of the server's ~390 µs of CPU per
request (measured by whole-process A/B: the serve process tree's CPU from /proc under wrk).

Here a line is one dict, filled in the order that chain fills it (the call's fields, ``event``,
the bound context, then service, environment, logger, level and timestamp), encoded once and
written straight into each of our own handlers (stdout, the tier file, the error file) under
that handler's lock. A handler that is not ours (the syslog forwarder, a test's capture) still
gets a ``LogRecord``, carrying the finished line. A line with an exception or positional
arguments, or any line before :func:`install` has run, takes structlog's way. The bytes are the
same either way: the tests compare the two paths line for line.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import structlog

#: The attribute a record carries its rendered line in (the formatter then writes it as is).
LINE = "_audit_ledger_line"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _fallback(obj: Any) -> Any:
    """What structlog's JSONRenderer writes for a value JSON has no form for."""
    method = getattr(obj, "__structlog__", None)
    return method() if callable(method) else repr(obj)


#: One encoder for every line: ``json.dumps`` with any argument builds a new encoder per call.
#: Its output is ``json.dumps``'s with the same arguments (spaces after separators, ASCII only).
_ENCODE = json.JSONEncoder(default=_fallback).encode


def _record_for(name: str, level: int, line: str) -> logging.LogRecord:
    """A record of a finished line, for handlers that take records."""
    record = logging.LogRecord(name, level, "", 0, line, None, None)
    setattr(record, LINE, line)
    return record


class LineStream(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that also takes a finished line of ours without a record."""

    def write_line(self, line: str) -> None:
        with self.lock or contextlib.nullcontext():
            try:
                # Our lines are ASCII (JSON with escapes): their length is their size in bytes.
                self.before_line(len(line) + 1)
                self.stream.write(line + self.terminator)
                self.flush()
            except Exception:  # noqa: BLE001 - the stdlib's own policy for a failing handler
                self.handleError(logging.makeLogRecord({"msg": line}))

    def before_line(self, size: int) -> None:
        """Called under the lock before a line of ``size`` bytes is written."""


class _Route:
    """Where a logger's lines of one level go, worked out once per handler layout."""

    __slots__ = ("handlers", "layout", "whole")

    def __init__(self, logger: logging.Logger, level: int, ours: Callable[[Any], bool]) -> None:
        self.layout = _layout(logger)
        #: (handler, written directly) in the order the stdlib would call them
        self.handlers: list[tuple[Any, bool]] = []
        #: a logger on the way filters records: hand the record to the stdlib as a whole
        self.whole = False
        probe = _record_for(logger.name, level, "")
        current: logging.Logger | None = logger
        while current is not None:
            if current.filters or current.disabled:
                self.whole = True
            for handler in current.handlers:
                if not ours(handler):
                    self.handlers.append((handler, False))
                elif handler.filter(probe):  # our filters look at the name and level only
                    self.handlers.append((handler, True))
            current = current.parent if current.propagate else None


def _layout(logger: logging.Logger) -> tuple[Any, ...]:
    """What a route depends on: each logger's handlers, filters and flags on the way up."""
    layout: list[Any] = []
    current: logging.Logger | None = logger
    while current is not None:
        layout += (len(current.handlers), len(current.filters), current.disabled)
        current = current.parent if current.propagate else None
    return tuple(layout)


class LineWriter:
    """Builds and writes our own lines (see the module doc); one per :func:`install`."""

    def __init__(
        self,
        identity: Mapping[str, str],
        timestamp: Callable[[Any, str, dict[str, Any]], Any],
        ours: Callable[[Any], bool],
    ) -> None:
        self._identity = dict(identity)
        self._timestamp = timestamp
        self._ours = ours
        self._routes: dict[tuple[str, int], _Route] = {}

    def write(
        self, logger: logging.Logger, method: str, event: str, fields: dict[str, Any]
    ) -> bool:
        """Write one line; False when it must take structlog's way instead."""
        if "exc_info" in fields or method not in _LEVELS:
            return False
        level = _LEVELS[method]
        if not logger.isEnabledFor(level):
            return True
        line = self._render(logger.name, method, event, fields)
        route = self._routes.get((logger.name, level))
        if route is None or route.layout != _layout(logger):
            route = self._routes[logger.name, level] = _Route(logger, level, self._ours)
        if route.whole:
            logger.handle(_record_for(logger.name, level, line))
            return True
        record = None
        for handler, direct in route.handlers:
            if level < handler.level:
                continue
            if direct:
                handler.write_line(line)
            else:
                if record is None:
                    record = _record_for(logger.name, level, line)
                handler.handle(record)
        return True

    def _render(self, name: str, method: str, event: str, fields: dict[str, Any]) -> str:
        # The order structlog's chain gives (configure_logging): the call's fields and event,
        # merge_contextvars, the identity, add_logger_name, add_log_level, TimeStamper.
        line = dict(fields)
        line["event"] = event
        structlog.contextvars.merge_contextvars(None, method, line)
        line.update(self._identity)
        line["logger"] = name
        line["level"] = method
        self._timestamp(None, method, line)
        return _ENCODE(line)
