"""``AUDIT_LEDGER_READ_DATABASE_URL`` against a real streaming replica (issue #16 item 2).

The module starts its own primary and hot standby (``tests/support/replica.py``:
``initdb``, ``pg_basebackup -R -X stream``, ``pg_ctl``) and checks that reads, proofs, leaves
and tiles served through the replica equal the primary's; that a replica whose replay is
paused never serves a size it has not got (the read waits for replay or falls back to the
primary, and ``ledger_read_replica_total`` says which); and that a replica that goes away
leaves a real ``audit-ledger serve`` answering from the primary, never with a 5xx.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from audit_ledger.auditor.mirror import open_mirror
from audit_ledger.core.tiles import Tile
from audit_ledger.crypto.keys import init_keys
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from tests.conftest import ORIGIN, REQUIRE_PG, migrate
from tests.support import replica as replica_support
from tests.support.factories import event
from tests.support.polling import wait_until
from tests.support.servers import InProcessServer, LiveServer, free_port, in_process_server

pytestmark = [pytest.mark.process, pytest.mark.postgres]

OUTCOMES = ("replica", "waited", "primary_fallback", "replica_down")
OFFICER = ["compliance_officer"]


@pytest.fixture(scope="module")
def pair() -> Iterator[replica_support.ReplicaPair]:
    why = replica_support.missing()
    if why is not None and REQUIRE_PG:  # CI: PostgreSQL is mandatory, its replicas too
        pytest.fail(f"AUDIT_LEDGER_REQUIRE_POSTGRES=1 but {why}")
    if why is not None:
        pytest.skip(f"READ-REPLICA TESTS NOT RUN: cannot start a PostgreSQL pair here: {why}")
    with replica_support.replica_pair() as started:
        yield started


@pytest.fixture(scope="module")
def settings(
    pair: replica_support.ReplicaPair, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    pair.primary.execute("CREATE DATABASE ledger")
    migrate(pair.primary.url("ledger"))
    keys = tmp_path_factory.mktemp("replica") / "keys"
    init_keys(keys, ORIGIN)
    return load_settings(
        database_url=pair.primary.url("ledger"),
        read_database_url=pair.standby.url("ledger"),
        keys_dir=keys,
        checkpoint_origin=ORIGIN,
    )


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[InProcessServer]:
    with in_process_server(settings) as started:
        yield started


@pytest.fixture(scope="module")
def primary(settings: Settings) -> Iterator[Ledger]:
    """The same ledger with no replica: what every answer must equal."""
    ledger = Ledger.open(settings.model_copy(update={"read_database_url": None}))
    try:
        yield ledger
    finally:
        ledger.close()


def counts() -> dict[str, float]:
    return {
        o: REGISTRY.get_sample_value("ledger_read_replica_total", {"outcome": o}) or 0.0
        for o in OUTCOMES
    }


def delta(before: dict[str, float]) -> dict[str, float]:
    now = counts()
    return {o: now[o] - before[o] for o in OUTCOMES if now[o] != before[o]}


def append(server: InProcessServer | LiveServer, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        body = event()
        if isinstance(server, LiveServer):
            r = httpx.post(server.url + "/v1/events", json=body, headers=server.headers("writer"))
        else:
            r = server.post("/v1/events", json=body, headers=server.headers("writer"))
        assert r.status_code == 201, r.text
        seqs.append(r.json()["seq"])
    return seqs


def checkpointed(primary: Ledger) -> int:
    made = primary.log.checkpoint()
    assert made is not None
    return made.tree_size


def ledger_in(server: InProcessServer) -> Ledger:
    ledger: Ledger = server.app.state.ledger
    return ledger


def proof(get: Any, auditor: dict[str, str], seq: int, size: int) -> list[str]:
    r = get(f"/v1/log/proof/inclusion?seq={seq}&tree_size={size}", headers=auditor)
    assert r.status_code == 200, r.text
    hashes: list[str] = r.json()["hashes"]
    return hashes


def test_reads_proofs_leaves_and_tiles_from_the_replica_equal_the_primarys(
    pair: replica_support.ReplicaPair, server: InProcessServer, primary: Ledger
) -> None:
    seqs = append(server, 12)
    size = checkpointed(primary)
    pair.wait_replayed()
    auditor, officer = server.headers("auditor"), server.headers("compliance_officer")
    before, primary_size = counts(), primary.log.size()

    page = server.get("/v1/events?category=financial_transactions&limit=5", headers=officer)
    assert page.status_code == 200, page.text
    expected = primary.reads.page_for(OFFICER, Query(category="financial_transactions", limit=5))
    assert page.json()["events"] == expected.to_dict()["events"]
    one = server.get(f"/v1/events/{seqs[3]}", headers=officer)
    assert one.json() == primary.reads.view_for(OFFICER, seqs[3]).to_dict()
    assert proof(server.get, auditor, seqs[3], size) == [
        h.hex() for h in primary.log.inclusion_proof(seqs[3], size)
    ]
    consistency = server.get(f"/v1/log/proof/consistency?first=3&second={size}", headers=auditor)
    assert consistency.json()["hashes"] == [h.hex() for h in primary.log.consistency_proof(3, size)]
    leaves = server.get(f"/v1/log/leaves?start=0&end={size}", headers=auditor)
    assert [row["seq"] for row in leaves.json()["leaves"]] == list(range(size))
    tile = Tile(0, 0, size)
    served = server.get(f"/tlog/{tile.path()}", headers=auditor)
    assert served.status_code == 200, served.text
    assert served.content == primary.tiles.read(tile)

    # Six routed reads, every one on the replica (it had replayed the checkpointed size); the
    # three recorded ones (page, entry, leaves) appended their records_read on the primary.
    assert delta(before) == {"replica": 6}
    assert primary.log.size() == primary_size + 3


def test_an_export_reads_its_leaves_and_proofs_on_the_replica(
    pair: replica_support.ReplicaPair,
    server: InProcessServer,
    primary: Ledger,
    tmp_path: Path,
) -> None:
    append(server, 4)
    size = checkpointed(primary)
    pair.wait_replayed()
    before = counts()
    with open_mirror(tmp_path / "mirror", create=True) as mirror:
        report = ledger_in(server).export(mirror, inclusion_checks=3, principal="cli")
    assert report.tree_size == size
    assert report.new_leaves == size
    assert report.inclusion_proofs == 3
    routed = delta(before)
    assert set(routed) == {"replica"}
    assert routed["replica"] >= 4  # leaves (at least one page) and three inclusion proofs


def test_a_lagging_replica_waits_or_falls_back_and_never_serves_a_size_it_has_not_got(
    pair: replica_support.ReplicaPair, server: InProcessServer, primary: Ledger
) -> None:
    auditor, officer = server.headers("auditor"), server.headers("compliance_officer")
    old_size = checkpointed(primary)
    pair.wait_replayed()
    pair.standby.execute("SELECT pg_wal_replay_pause()")
    try:
        wait_until(
            lambda: pair.standby.execute("SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused"
        )
        new = append(server, 5)
        size = checkpointed(primary)
        assert size > old_size
        before = counts()

        # A proof at the new size: the paused replica cannot give it; after the bounded wait
        # the primary answers, with the primary's proof.
        assert proof(server.get, auditor, new[-1], size) == [
            h.hex() for h in primary.log.inclusion_proof(new[-1], size)
        ]
        assert delta(before) == {"primary_fallback": 1}

        # A first page may come from the replica: a consistent snapshot of its shorter log,
        # without the new events (which shows where it was read).
        before = counts()
        page = server.get("/v1/events?category=financial_transactions&limit=1000", headers=officer)
        assert page.status_code == 200
        listed = {e["seq"] for e in page.json()["events"]}
        assert listed
        assert not listed & set(new)
        assert delta(before) == {"replica": 1}

        # The entry itself is not "not found" because the replica lacks it.
        before = counts()
        one = server.get(f"/v1/events/{new[0]}", headers=officer)
        assert one.status_code == 200
        assert one.json() == primary.reads.view_for(OFFICER, new[0]).to_dict()
        assert delta(before) == {"primary_fallback": 1}

        # Replay resumes while a read waits: served by the replica once it has caught up.
        source = ledger_in(server).read_source
        source.wait_seconds = 20
        resume = threading.Timer(0.3, pair.standby.execute, ["SELECT pg_wal_replay_resume()"])
        before = counts()
        resume.start()
        try:
            r = server.get(
                f"/v1/log/proof/consistency?first={old_size}&second={size}", headers=auditor
            )
        finally:
            resume.join()
            source.wait_seconds = 0.2
        expected = primary.log.consistency_proof(old_size, size)
        assert r.json()["hashes"] == [h.hex() for h in expected]
        assert delta(before) == {"waited": 1}
    finally:
        pair.standby.execute("SELECT pg_wal_replay_resume()")


def _metric(url: str, outcome: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(rf'^ledger_read_replica_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    assert found is not None, text[-2000:]
    return float(found.group(1))


def test_a_replica_that_goes_away_leaves_a_real_server_answering_from_the_primary(
    pair: replica_support.ReplicaPair,
    server: InProcessServer,
    primary: Ledger,
    settings: Settings,
    tmp_path: Path,
) -> None:
    live = LiveServer(
        settings,
        free_port(),
        tokens=server.tokens,
        log=tmp_path / "server.log",
        extra_env={"AUDIT_LEDGER_READ_DATABASE_URL": str(settings.read_database_url)},
    )
    live.start()
    try:
        seqs = append(live, 3)
        size = checkpointed(primary)
        pair.wait_replayed()

        def get(path: str, **kwargs: Any) -> httpx.Response:
            return httpx.get(live.url + path, timeout=30, **kwargs)

        auditor, officer = live.headers("auditor"), live.headers("compliance_officer")
        expected = [h.hex() for h in primary.log.inclusion_proof(seqs[0], size)]
        assert proof(get, auditor, seqs[0], size) == expected
        assert _metric(live.url, "replica") >= 1

        pair.standby.stop("fast")
        answers = [
            get("/v1/events?category=financial_transactions", headers=officer),
            get(f"/v1/events/{seqs[1]}", headers=officer),
            get(f"/v1/log/leaves?start=0&end={size}", headers=auditor),
            get(f"/tlog/{Tile(0, 0, size).path()}", headers=auditor),
        ]
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert answers[1].json() == primary.reads.view_for(OFFICER, seqs[1]).to_dict()
        assert answers[3].content == primary.tiles.read(Tile(0, 0, size))
        assert proof(get, auditor, seqs[0], size) == expected
        assert _metric(live.url, "replica_down") >= 5
    finally:
        live.stop()
        if not pair.standby.running():
            pair.standby.start()


def test_readyz_reports_the_replica_and_stays_ready_without_it(
    pair: replica_support.ReplicaPair, server: InProcessServer, primary: Ledger
) -> None:
    """Reachable and caught up; paused: the entries it is behind; stopped: unreachable, and
    the service still ready (reads go to the primary) — within the probe's bound."""
    appended = append(server, 2)
    pair.wait_replayed()
    ready = server.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["read_replica"] == {"status": "ok", "lag_entries": 0}
    # Reads went through the replica's pool: it has its own pool metrics.
    waits = {"engine": "replica"}
    assert (REGISTRY.get_sample_value("ledger_db_pool_wait_seconds_count", waits) or 0) > 0
    assert REGISTRY.get_sample_value("ledger_db_pool_max_connections", waits)

    pair.standby.execute("SELECT pg_wal_replay_pause()")
    try:
        wait_until(
            lambda: pair.standby.execute("SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused"
        )
        append(server, 3)
        behind = server.get("/readyz").json()
        assert behind["status"] == "ready"
        assert behind["read_replica"] == {"status": "ok", "lag_entries": 3}
    finally:
        pair.standby.execute("SELECT pg_wal_replay_resume()")

    source = ledger_in(server).read_source
    pair.standby.stop("fast")
    try:
        started = time.monotonic()
        down = server.get("/readyz")
        took = time.monotonic() - started
        assert down.status_code == 200, down.text
        assert down.json() == {
            "status": "ready",
            "checks": {"keys": "ok", "database": "ok", "schema": "ok"},
            "read_replica": {"status": "unreachable", "lag_entries": None},
        }
        assert took < 5
        # Reads meanwhile: from the primary, not a 5xx.
        officer = server.headers("compliance_officer")
        assert server.get(f"/v1/events/{appended[0]}", headers=officer).status_code == 200
    finally:
        pair.standby.start()
        source._down_until = 0.0  # later reads may use the replica at once
    pair.wait_replayed()
    assert server.get("/readyz").json()["read_replica"]["status"] == "ok"
    assert primary.log.size() >= len(appended)
