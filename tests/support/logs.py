"""Logging configured for a test, and the process's logging put back afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from audit_ledger.observability import loggers
from audit_ledger.observability.logging import configure_logging


@contextmanager
def configured_logging(log_dir: Path, **options: Any) -> Iterator[Path]:
    """``configure_logging(log_dir, **options)``, undone when the block ends."""
    root = logging.getLogger()
    level = root.level
    configure_logging(log_dir, **options)
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
