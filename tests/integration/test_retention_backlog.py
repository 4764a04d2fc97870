"""A retention backlog larger than one run's bound is worked off in several recorded runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from audit_ledger.ledger import retention
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.support.factories import event


def test_backlog_is_split_into_bounded_recorded_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [datetime(2020, 1, 10, tzinfo=UTC)]
    ledger = Ledger.open(settings, clock=lambda: now[0])
    try:
        raws = [event("security_events", user_id=i) for i in range(7)]
        ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        monkeypatch.setattr(retention, "MAX_PURGE_PER_RUN", 3)
        now[0] = datetime(2026, 1, 1, tzinfo=UTC)  # past 5 years and past the whole month
        dry = ledger.retention.run(dry_run=True)
        assert dry.categories["security_events"]["payloads_purged"] == 3
        assert dry.more_pending
        report = ledger.retention.run()
        assert len(report.op_seqs) == 3  # 3 + 3 + 1
        assert report.categories["security_events"]["payloads_purged"] == 7
        # The month's key goes only with the run that purges its last payload.
        assert len(report.categories["security_events"]["keys_destroyed"]) == 1
        assert not ledger.retention.run(dry_run=True).more_pending
        verified = ledger.verification.run()
        assert verified.ok, verified.problem
        assert verified.payloads_purged == 7
    finally:
        ledger.close()
