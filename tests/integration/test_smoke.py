"""End-to-end smoke test of the storage + ledger stack on each backend."""

from __future__ import annotations

from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from tests.support.factories import event


def test_append_read_verify(ledger: Ledger) -> None:
    raws = [event(), event("data_privacy_events"), event("security_events")]
    receipts = ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    assert [r.seq for r in receipts] == [0, 1, 2]
    again = ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    assert [r.seq for r in again] == [0, 1, 2]
    assert all(r.replayed for r in again)
    page = ledger.reads.page_for(["compliance_officer"], Query())
    assert [v.seq for v in page.events] == [0]
    assert page.events[0].data == raws[0]["data"]
    assert ledger.log.checkpoint() is not None
    report = ledger.verification.run()
    assert report.ok, report.problem
    assert report.size == 3
