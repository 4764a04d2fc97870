"""The tiers' loggers, with structlog imported on a logger's first use rather than at import.

Modules that log (the append use case among them) create their loggers at import time, and
importing structlog costs a command's start-up even when it never logs: ``audit-ledger append``
is a whole process users time (issue #16), and a bulk import logs nothing. (With ``rich``
installed, as in the development environment, ``structlog.dev`` imports it: 50 ms more.)
"""

from __future__ import annotations

from typing import Any

LOGGER_PREFIX = "audit_ledger"


class _TierLogger:
    """Stands for ``structlog.get_logger(name)``, obtained on first use and kept."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attribute: str) -> Any:
        if self._logger is None:
            import structlog  # noqa: PLC0415 - the point of this class

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attribute)


def get_logger(tier: str) -> Any:
    """A structlog logger writing to ``tier`` (application, security, performance)."""
    return _TierLogger(f"{LOGGER_PREFIX}.{tier}")
