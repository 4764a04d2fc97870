"""Scheduled jobs' bookkeeping: one leader per job and tick across replicas, and what ran when.

The scheduler shell (:mod:`audit_ledger.scheduler`) says *when*; this says *whether* (this
replica leads the job, the tick is not done yet) and records the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.errors import AuditLedgerError
from audit_ledger.storage import jobs
from audit_ledger.storage.store import Store

#: Outcomes of :meth:`Jobs.run_once`.
RAN, BUSY, DONE = "ran", "skipped: another replica holds the job", "skipped: tick already done"

log = logging.getLogger("audit_ledger.application.scheduler")


class Jobs:
    """Runs a job once per tick under a leader lock and records each run."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def run_once(
        self, name: str, period_seconds: int, action: Callable[[], str], now: datetime
    ) -> str:
        """Run ``action`` if this replica leads ``name`` and its current tick is not done."""
        tick = int(now.timestamp()) // period_seconds
        with jobs.job_lock(self.store, name) as leader:
            if not leader:
                log.debug("job %s tick %d: %s", name, tick, BUSY)
                return BUSY
            last = jobs.last_tick(self.store, name)
            if last is not None and last >= tick:
                log.debug("job %s tick %d: %s", name, tick, DONE)
                return DONE
            try:
                outcome = action()
            except AuditLedgerError as exc:
                outcome = f"error: {exc.__class__.__name__}"
                log.warning("job %s failed: %s", name, exc.__class__.__name__)
            jobs.record_run(self.store, name, tick, format_timestamp(now), outcome[:16])
            log.info("job %s tick %d: %s", name, tick, outcome)
            return RAN

    def runs(self) -> dict[str, tuple[int, str, str]]:
        """Per job: ``(last tick, when, outcome)``."""
        return jobs.runs(self.store)
