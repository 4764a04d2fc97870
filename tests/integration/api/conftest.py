"""Fixtures for HTTP tests (the servers themselves are in :mod:`tests.support.servers`).

``app_server`` serves the application in the test process against the test database — the
default for HTTP tests. ``socket_server`` serves it on a real socket from a thread of the test
process, for clients that need a URL. ``live_server`` starts the CLI (``audit-ledger serve``)
in a subprocess on a free port, for tests marked ``process`` that need a real server process.
Each creates one principal per role (plus a revoked auditor) first; ``live_server`` waits for
``/readyz``, and ``start``/``stop`` let tests restart it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from audit_ledger.settings import Settings
from tests.support.servers import (
    ROLE_NAMES,
    InProcessServer,
    LiveServer,
    ThreadedServer,
    cli_env,
    free_port,
    in_process_server,
    make_server,
    run_cli,
    threaded_server,
)

# Re-exported: modules import these from here.
__all__ = [
    "ROLE_NAMES",
    "InProcessServer",
    "LiveServer",
    "ThreadedServer",
    "cli_env",
    "free_port",
    "make_server",
    "run_cli",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a real server process is a ``process`` test, marked or not."""
    for item in items:
        if "live_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.process)


@pytest.fixture
def app_server(settings: Settings) -> Iterator[InProcessServer]:
    with in_process_server(settings) as server:
        yield server


@pytest.fixture
def socket_server(settings: Settings) -> Iterator[ThreadedServer]:
    with threaded_server(settings) as server:
        yield server


@pytest.fixture
def live_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    server = make_server(settings, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
