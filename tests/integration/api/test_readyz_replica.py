"""``/readyz`` with a read replica that takes connections but never answers (a standby stuck, or
a firewall that swallows packets): the answer still comes within the probe's bound, ready, with
the replica ``unreachable`` — a load balancer's 1 s probe must not take the service out of
rotation because of a replica its reads do without. (A real caught-up, paused and stopped
standby: ``tests/integration/test_read_replica.py``.)"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from audit_ledger.api.routes.health import REPLICA_PROBE_SECONDS
from audit_ledger.settings import Settings
from tests.support.servers import in_process_server


@pytest.fixture
def silent_replica() -> Iterator[str]:
    """A PostgreSQL URL whose server completes TCP handshakes (the kernel's backlog) and then
    says nothing: a connection attempt waits out its connect timeout (2 s)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # never accepted, never answered
        yield f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/ledger"


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_silent_replica_leaves_readyz_ready_and_prompt(
    settings: Settings, silent_replica: str
) -> None:
    with in_process_server(settings.model_copy(update={"read_database_url": silent_replica})) as s:
        for _ in range(2):  # the first probe's attempt may still be waiting: the next is prompt
            started = time.monotonic()
            r = s.get("/readyz")
            took = time.monotonic() - started
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ready"
            assert r.json()["read_replica"] == {"status": "unreachable", "lag_entries": None}
            assert took < REPLICA_PROBE_SECONDS + 0.5, took
