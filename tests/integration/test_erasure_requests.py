"""Erasure requests that outlive a legal hold, on each backend (issue #14).

An erasure asked for is an ``erasure_requests`` row: ``blocked`` while a hold keeps some of its
data (naming the holds), resumed when the last of them is released — a recorded erasure of its
own, after which the chain verifies and the held payloads and their key are really gone — and
``pending`` if a crash came between recording and running it, which the scheduler's
``erasure_retry`` job then runs. The subject is stored by blind index only; runs are counted in
``ledger_erasures_total`` and holds in ``ledger_legal_holds_total``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.errors import ValidationError
from audit_ledger.ledger.erasure import RETRY_AFTER
from audit_ledger.ledger.service import Ledger
from audit_ledger.scheduler import RAN, default_jobs, run_job
from audit_ledger.settings import Settings
from audit_ledger.storage import jobs
from audit_ledger.storage.erasure_requests import StoredErasureRequest
from audit_ledger.storage.schema import data_keys, payloads
from tests.integration.test_erasure_holds import append, assert_nowhere, one, request
from tests.support.factories import event

PRIV = "data_privacy_events"
CANARY = "canary-erasure-request-71c2e0"


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def stored_payloads(ledger: Ledger, seqs: list[int]) -> list[int]:
    with ledger.store.reader() as conn:
        rows = conn.execute(select(payloads.c.seq).where(payloads.c.seq.in_(seqs)))
        return sorted(r.seq for r in rows)


def live_keys(ledger: Ledger, seqs: list[int]) -> list[str]:
    """The data keys of entries ``seqs`` that still have key material (row and key store)."""
    key_ids = {one(ledger, "auditor", s).header["key_id"] for s in seqs}
    with ledger.store.reader() as conn:
        rows = conn.execute(select(data_keys).where(data_keys.c.key_id.in_(sorted(key_ids))))
        in_db = {r.key_id for r in rows if r.wrapped is not None}
    in_store = set(ledger.keys.provider.external_key_ids())
    return sorted(k for k in key_ids if k in in_db or k in in_store)


def test_blocked_by_two_holds_resumes_only_when_both_are_released(ledger: Ledger) -> None:
    mine = append(
        ledger,
        event(PRIV, user_id=CANARY, data_type="email"),
        event(PRIV, user_id=CANARY, action="share"),
    )
    (other,) = append(ledger, event(PRIV, user_id="someone-else"))
    placed_before = counted("ledger_legal_holds_total", action="placed")
    by_subject = ledger.holds.create("subject", value=CANARY, reason="case 1")
    by_category = ledger.holds.create("category", value=PRIV, reason="case 2")
    assert counted("ledger_legal_holds_total", action="placed") == placed_before + 2
    blocked_before = counted("ledger_erasures_total", outcome="blocked")
    resumed_before = counted("ledger_erasures_total", outcome="resumed")
    released_before = counted("ledger_legal_holds_total", action="released")

    report = ledger.erasure.erase_subject(CANARY, actor="p-privacy")
    both = sorted([by_subject.hold_id, by_category.hold_id])
    assert (report.state, report.blocked_by) == ("blocked", both)
    assert report.to_dict()["request_id"] == report.request_id
    assert report.categories[PRIV]["held_seq_ranges"] == [[mine[0], mine[1]]]
    assert counted("ledger_erasures_total", outcome="blocked") == blocked_before + 1
    assert stored_payloads(ledger, mine) == mine
    assert ledger.erasure.requests(state="blocked")[0].request_id == report.request_id
    assert ledger.erasure.requests(state="done") == []
    assert [r.request_id for r in ledger.erasure.requests(user_id=CANARY)] == [report.request_id]
    assert ledger.erasure.requests(user_id="someone-else") == []

    # One of its two holds released: still blocked, nothing run, nothing recorded.
    size = ledger.log.size()
    ledger.holds.release(by_subject.hold_id, actor="p-admin")
    assert ledger.log.size() == size + 1  # the release alone
    still = request(ledger, report.request_id)
    assert (still.state, still.blocked_by, still.last_op_seq) == (
        "blocked",
        tuple(both),
        report.op_seq,
    )
    assert stored_payloads(ledger, mine) == mine
    assert counted("ledger_erasures_total", outcome="resumed") == resumed_before

    # The other released too: the erasure resumes, recorded as an erasure of its own.
    ledger.holds.release(by_category.hold_id, actor="p-admin")
    done = request(ledger, report.request_id)
    assert (done.state, done.blocked_by) == ("done", ())
    assert done.last_op_seq == size + 2  # right after the second release
    op = one(ledger, "security_team", done.last_op_seq)
    assert op.header["event_type"] == "erasure"
    assert op.data is not None
    assert op.data["request_ids"] == [report.request_id]
    assert op.data["trigger"] == "hold_released"
    assert op.data["requested_by"] == "p-privacy"
    assert op.data["subject_ref"] == done.subject_ref
    assert op.data["categories"][PRIV]["seq_ranges"] == [[mine[0], mine[1]]]
    assert counted("ledger_erasures_total", outcome="resumed") == resumed_before + 1
    assert counted("ledger_legal_holds_total", action="released") == released_before + 2

    # The payloads and their key are really gone; the other subject's stay.
    assert stored_payloads(ledger, mine) == []
    assert live_keys(ledger, mine) == []
    for seq in mine:
        view = one(ledger, "privacy_officer", seq)
        assert (view.payload_state, view.state_seq, view.data) == ("erased", done.last_op_seq, None)
    assert one(ledger, "privacy_officer", other).data is not None
    assert stored_payloads(ledger, [other]) == [other]

    check = ledger.verification.run()
    assert check.ok, check.problem
    assert check.payloads_purged == 2
    assert_nowhere(ledger, CANARY)  # the request row holds the blind index only


def test_a_pending_request_is_run_by_the_scheduler(settings: Settings) -> None:
    now = [datetime.now(UTC)]
    ledger = Ledger.open(settings, clock=lambda: now[0])
    try:
        mine = append(ledger, event(PRIV, user_id=CANARY), event(PRIV, user_id=CANARY))
        # What a process that crashed between recording two requests and running them left:
        # committed pending rows (the first transaction of erase_subject), nothing in the chain.
        subject = ledger.keys.indexer.index("subject", CANARY)
        asked = format_timestamp(now[0])
        with ledger.store.writer() as tx:
            for request_id in ("erasure_crashed00001", "erasure_crashed00002"):
                tx.insert_erasure_request(
                    StoredErasureRequest(
                        request_id, subject, None, "p-privacy", asked, "pending", (), None, asked
                    )
                )
        (job,) = [j for j in default_jobs(ledger) if j.name == "erasure_retry"]
        size = ledger.log.size()

        # Too fresh: the call that recorded it may still be running it.
        assert ledger.erasure.retry() == []
        assert ledger.log.size() == size

        now[0] += RETRY_AFTER + timedelta(seconds=1)
        done_before = counted("ledger_erasures_total", outcome="done")
        assert run_job(ledger, job, now[0]) == RAN
        assert jobs.runs(ledger.store)["erasure_retry"][2] == "1/1 done"
        # Both requests of the one subject were run by one recorded erasure.
        assert ledger.log.size() == size + 1
        for request_id in ("erasure_crashed00001", "erasure_crashed00002"):
            got = request(ledger, request_id)
            assert (got.state, got.last_op_seq) == ("done", size)
        op = one(ledger, "security_team", size)
        assert op.data is not None
        assert op.data["request_ids"] == ["erasure_crashed00001", "erasure_crashed00002"]
        assert op.data["trigger"] == "retry"
        assert counted("ledger_erasures_total", outcome="done") == done_before + 1
        assert stored_payloads(ledger, mine) == []
        assert live_keys(ledger, mine) == []

        # Nothing left to retry: the next tick records nothing.
        now[0] += timedelta(seconds=settings.erasure_retry_interval_seconds)
        assert run_job(ledger, job, now[0]) == RAN
        assert jobs.runs(ledger.store)["erasure_retry"][2] == "0/0 done"
        assert ledger.log.size() == size + 1
        check = ledger.verification.run()
        assert check.ok, check.problem
    finally:
        ledger.close()


def test_a_release_the_process_did_not_resume_is_caught_up_by_the_retry(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    (mine,) = append(ledger, event(PRIV, user_id=CANARY))
    hold = ledger.holds.create("subject", value=CANARY)
    report = ledger.erasure.erase_subject(CANARY)
    assert report.state == "blocked"
    # A process that died right after committing the release never ran its resume.
    monkeypatch.setattr(ledger.holds, "on_release", None)
    ledger.holds.release(hold.hold_id)
    assert request(ledger, report.request_id).state == "blocked"

    (resumed,) = ledger.erasure.retry()
    assert (resumed.request_id, resumed.state) == (report.request_id, "done")
    assert request(ledger, report.request_id).state == "done"
    assert one(ledger, "privacy_officer", mine).payload_state == "erased"
    assert ledger.erasure.retry() == []
    assert ledger.verification.run().ok


def test_a_new_hold_keeps_a_resumed_request_blocked(ledger: Ledger) -> None:
    (mine,) = append(ledger, event(PRIV, user_id=CANARY))
    first = ledger.holds.create("subject", value=CANARY)
    report = ledger.erasure.erase_subject(CANARY)
    assert report.blocked_by == [first.hold_id]
    # A hold placed after the request is not in its blocked_by: releasing the first hold
    # resumes it, and that run finds the second.
    second = ledger.holds.create("category", value=PRIV)
    ledger.holds.release(first.hold_id)
    again = request(ledger, report.request_id)
    assert (again.state, again.blocked_by) == ("blocked", (second.hold_id,))
    assert again.last_op_seq is not None
    assert report.op_seq is not None
    assert again.last_op_seq > report.op_seq
    assert one(ledger, "privacy_officer", mine).data is not None
    ledger.holds.release(second.hold_id)
    assert request(ledger, report.request_id).state == "done"
    assert one(ledger, "privacy_officer", mine).payload_state == "erased"
    assert ledger.verification.run().ok


def test_listing_refuses_an_unknown_state(ledger: Ledger) -> None:
    with pytest.raises(ValidationError) as caught:
        ledger.erasure.requests(state="cancelled")
    assert "cancelled" not in str(caught.value)
