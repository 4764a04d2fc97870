"""Fixtures of the observability tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from audit_ledger.api import middleware
from audit_ledger.observability.loggers import get_logger
from tests.support.logs import configured_logging


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Logging configured into ``tmp_path/logs``; the process's logging restored afterwards."""
    with configured_logging(tmp_path / "logs") as log_dir:
        # Module-level loggers may have cached an earlier configuration.
        monkeypatch.setattr(middleware, "perf_log", get_logger("performance"))
        monkeypatch.setattr(middleware, "app_log", get_logger("application"))
        yield log_dir
