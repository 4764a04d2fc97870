"""The tiers' loggers, with structlog imported on a logger's first use rather than at import.

Modules that log (the append use case among them) create their loggers at import time, and
importing structlog costs a command's start-up even when it never logs: ``audit-ledger append``
is a whole process users time (issue #16), and a bulk import logs nothing. (With ``rich``
installed, as in the development environment, ``structlog.dev`` imports it: 50 ms more.)

Once logging is configured, a line goes through :class:`~.lines.LineWriter` (its module says
why); before that, and for the lines it leaves (exceptions, positional arguments), through
structlog's configured chain.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit_ledger.observability.lines import LineWriter

LOGGER_PREFIX = "audit_ledger"
_writer: LineWriter | None = None


def install(writer: LineWriter | None) -> None:
    """Send the tier loggers' lines through ``writer`` (None: through structlog)."""
    global _writer  # noqa: PLW0603 - logging is process-global by nature
    _writer = writer


class _TierLogger:
    """Stands for ``structlog.get_logger(name)``, obtained on first use and kept."""

    __slots__ = ("_logger", "_name", "_stdlib")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None
        self._stdlib = logging.getLogger(name)

    def _line(self, method: str, event: str, args: tuple[Any, ...], fields: Any) -> None:
        writer = _writer
        if writer is None or args or not writer.write(self._stdlib, method, event, fields):
            # structlog's method by name (getattr would find this class's own)
            self.__getattr__(method)(event, *args, **fields)

    def debug(self, event: str, *args: Any, **fields: Any) -> None:
        self._line("debug", event, args, fields)

    def info(self, event: str, *args: Any, **fields: Any) -> None:
        self._line("info", event, args, fields)

    def warning(self, event: str, *args: Any, **fields: Any) -> None:
        self._line("warning", event, args, fields)

    def error(self, event: str, *args: Any, **fields: Any) -> None:
        self._line("error", event, args, fields)

    def __getattr__(self, attribute: str) -> Any:
        if self._logger is None:
            import structlog  # noqa: PLC0415 - the point of this class

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attribute)


def get_logger(tier: str) -> Any:
    """A structlog logger writing to ``tier`` (application, security, performance)."""
    return _TierLogger(f"{LOGGER_PREFIX}.{tier}")
