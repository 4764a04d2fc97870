"""Console sessions across the workers of a real ``audit-ledger serve --workers 2`` (issue #14).

A copied session cookie works on every worker while the session lives, and once its owner signs
out (on whichever worker took that request) it is refused by every worker: the session is a row
in ``console_sessions``, not a memory of the process that served the sign-out. Each replayed
request is on a connection of its own, so the kernel spreads them over both workers'
SO_REUSEPORT sockets; each worker's ``performance.<pid>.log`` proves both answered.
"""

from __future__ import annotations

import http.client
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.integration.api.conftest import LiveServer
from tests.integration.api.test_workers import served_by, wait_until, workers_of

pytestmark = pytest.mark.process
REPLAYS = 40  # all on one worker by chance: 2^-39
ROUTE = "/console/search"


def replay(server: LiveServer, cookie: str) -> int:
    """GET the search page with a copied cookie on a fresh connection; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "GET", ROUTE, headers={"Cookie": f"al_console={cookie}", "Connection": "close"}
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def logged(log_dir: Path, expected: int) -> Counter[int]:
    def complete() -> Counter[int] | None:
        counts = served_by(log_dir, ROUTE)
        return counts if counts.total() == expected else None

    found: Counter[int] = wait_until(complete, 10, f"{expected} requests of {ROUTE} logged")
    return found


@pytest.mark.timeout(90)
def test_a_copied_cookie_is_refused_by_every_worker_after_sign_out(
    two_workers: LiveServer, tmp_path: Path
) -> None:
    server = two_workers
    workers = set(workers_of(server))
    log_dir = tmp_path / "logs"
    with httpx.Client(base_url=server.url, timeout=10) as owner:
        form = owner.get("/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        signed_in = owner.post(
            "/console/sign-in",
            data={"csrf": csrf.group(1), "token": server.tokens["compliance_officer"]},
        )
        assert signed_in.status_code == 303, signed_in.text
        stolen = owner.cookies["al_console"]

        assert [replay(server, stolen) for _ in range(REPLAYS)] == [200] * REPLAYS
        before = logged(log_dir, REPLAYS)
        assert set(before) == workers, (dict(before), workers)

        page = owner.get("/console/status")  # not ROUTE: the logs count only the replays
        assert page.status_code == 200
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        out = owner.post("/console/sign-out", data={"csrf": token.group(1)})
        assert out.status_code == 303
        assert out.headers["location"] == "/console/sign-in"

    statuses = [replay(server, stolen) for _ in range(REPLAYS)]
    assert statuses == [303] * REPLAYS  # back to the sign-in form, on every worker
    after = logged(log_dir, 2 * REPLAYS) - before
    assert set(after) == workers, (dict(after), workers)
