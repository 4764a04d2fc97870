"""Fixtures of the observability tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from audit_ledger.api import middleware
from audit_ledger.observability import loggers
from audit_ledger.observability.loggers import get_logger
from audit_ledger.observability.logging import configure_logging


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Configure logging into ``tmp_path/logs``; restore the process's logging afterwards."""
    root = logging.getLogger()
    level = root.level
    log_dir = tmp_path / "logs"
    configure_logging(log_dir)
    # Module-level loggers may have cached an earlier configuration (cache_logger_on_first_use).
    monkeypatch.setattr(middleware, "perf_log", get_logger("performance"))
    monkeypatch.setattr(middleware, "app_log", get_logger("application"))
    try:
        yield log_dir
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_audit_ledger", False):
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        logging.getLogger("uvicorn.access").disabled = False
        structlog.reset_defaults()
        loggers.install(None)
