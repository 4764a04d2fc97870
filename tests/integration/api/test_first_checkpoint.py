"""``GET /v1/log/checkpoint`` answers as soon as the log has an entry (issue #12 item 8): the
first reader of a non-empty log without a checkpoint gets one signed on demand, instead of a 404
until the scheduler's first tick. An empty log still answers 404 (DESIGN §3)."""

from __future__ import annotations

import asyncio

from audit_ledger.core.checkpoint import verify_checkpoint
from audit_ledger.ledger.service import Ledger
from tests.integration.api.conftest import InProcessServer
from tests.support.factories import event


def test_first_checkpoint_is_made_on_demand_then_left_to_the_scheduler(
    app_server: InProcessServer, ledger: Ledger
) -> None:
    server = app_server
    assert ledger.store.latest_checkpoint() is None
    size = ledger.log.size()
    assert size > 0  # the principals' own entries
    r = server.get("/v1/log/checkpoint", headers=server.headers("auditor"))
    assert r.status_code == 200, r.text
    signed = verify_checkpoint(r.text, ledger.keys.signer.verifier)
    assert signed.size == size
    assert signed.root_hash == ledger.log.root(size)
    # Stored, so it is the one every later reader gets, and verify accounts for it.
    assert ledger.store.latest_checkpoint() is not None
    w = server.post("/v1/events", json=event(), headers=server.headers("writer"))
    assert w.status_code == 201, w.text
    again = server.get("/v1/log/checkpoint", headers=server.headers("compliance_officer"))
    assert again.text == r.text  # a read signs only the first one
    assert ledger.verification.run().ok


def test_an_empty_log_still_has_no_checkpoint(ledger: Ledger) -> None:
    assert ledger.log.size() == 0
    assert ledger.log.published_checkpoint() is None
    assert ledger.store.latest_checkpoint() is None


def test_concurrent_first_readers_get_one_checkpoint(ledger: Ledger) -> None:
    ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(5)]), "bot")

    async def readers() -> list[str]:
        made = await asyncio.gather(
            *(asyncio.to_thread(ledger.log.published_checkpoint) for _ in range(6))
        )
        return [c.note for c in made if c is not None]

    notes = asyncio.run(readers())
    assert len(notes) == 6
    assert len(set(notes)) == 1
    assert ledger.verification.run().checkpoints == 1
