"""Scheduled jobs (APScheduler 3): retention daily, a checkpoint every minute when the log grew
(then the tiles publication, when a tiles directory is set), incremental verification every
minute, full verification hourly, erasure requests left pending (or blocked by a hold released
meanwhile) rerun every five minutes, and with witnesses configured the latest checkpoint
submitted to them.

Each job runs at most once per *tick* (its period, aligned to the Unix epoch) however many
replicas run the scheduler: the first replica to take the job's lock after a tick boundary runs
it and records the tick; the others find the tick done and skip. A service that was down for
days runs each job once when it starts (catch-up), not once per missed tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from audit_ledger.ledger.jobs import BUSY, DONE, RAN
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability import metrics
from audit_ledger.observability.loggers import get_logger
from audit_ledger.observability.logging import cleanup_rotated

log = logging.getLogger("audit_ledger.application.scheduler")
security_log = get_logger("security")

__all__ = ["BUSY", "DONE", "RAN", "Job", "default_jobs", "run_job", "start_background"]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    period_seconds: int
    action: Callable[[Ledger], str]


def _checkpoint(ledger: Ledger) -> str:
    latest = ledger.log.latest_checkpoint()
    size = ledger.log.size()
    if size == 0 or (latest is not None and latest.tree_size >= size):
        return "unchanged"
    ledger.log.checkpoint()
    return "signed"


def _checkpoint_then_publish(ledger: Ledger) -> str:
    """The checkpoint job, then (with ``AUDIT_LEDGER_TILES_DIR``) the tiles publication: every
    tick, so a directory that fell behind (a checkpoint made by the CLI) catches up too."""
    outcome = _checkpoint(ledger)
    if ledger.settings.tiles_dir is None or ledger.log.latest_checkpoint() is None:
        return outcome
    report = ledger.tiles.publish(ledger.settings.tiles_dir)
    return f"{outcome}, +{report.written}"


def _retention(ledger: Ledger) -> str:
    report = ledger.retention.run()
    metrics.RETENTION_RUNS.inc()
    for category, outcome in report.categories.items():
        purged, keys = outcome["payloads_purged"], outcome["keys_destroyed"]
        metrics.RETENTION_PURGED.labels(category).inc(purged if isinstance(purged, int) else 0)
        metrics.RETENTION_KEYS.labels(category).inc(len(keys) if isinstance(keys, list) else 0)
    return "ok"


def _erasure_retry(ledger: Ledger) -> str:
    # Requests a crash left pending, and blocked ones a release did not resume (a crash right
    # after it); the erasure use case counts each run's outcome (ledger_erasures_total).
    reports = ledger.erasure.retry()
    done = sum(r.state == "done" for r in reports)
    return f"{done}/{len(reports)} done"


def _log_cleanup(ledger: Ledger) -> str:
    deleted = cleanup_rotated(ledger.settings.log_dir)
    return f"deleted {len(deleted)}"


def _verify(ledger: Ledger) -> str:
    # One process: the periodic check must not take the cores the service is answering on.
    report = ledger.verification.run(jobs=1)
    if not report.ok:
        metrics.VERIFICATION_FAILURES.labels("full").inc()
        security_log.error("verification_failed", problem=str(report.problem))
        return "FAILED"
    return "ok"


def _verify_recent(ledger: Ledger) -> str:
    # Every minute, O(new entries): a tampered row is alerted within minutes (PCI DSS 10.3.4).
    # The error-tier line is forwarded to the SIEM (AUDIT_LEDGER_SYSLOG_TIERS has "error").
    report = ledger.recent_verification.run(ledger.clock())
    if not report.ok:
        metrics.VERIFICATION_FAILURES.labels("incremental").inc()
        security_log.error("verification_failed", kind="incremental", problem=str(report.problem))
        return "FAILED"
    return "ok"


def _witness(ledger: Ledger) -> str:
    # Its own job, off the append path and apart from signing: a witness that is down or slow
    # (bounded by AUDIT_LEDGER_WITNESS_TIMEOUT_SECONDS) delays only its own cosignature.
    results = ledger.witnessing.submit_latest()
    for result in results:
        metrics.WITNESS_SUBMISSIONS.labels(result.witness, result.kind).inc()
    done = sum(r.kind in ("cosigned", "up_to_date") for r in results)
    return f"{done}/{len(results)} ok"


def default_jobs(ledger: Ledger) -> list[Job]:
    s = ledger.settings
    return [
        Job("checkpoint", s.checkpoint_interval_seconds, _checkpoint_then_publish),
        Job("retention", s.retention_interval_seconds, _retention),
        Job("verify", s.verify_interval_seconds, _verify),
        Job("verify_recent", s.verify_recent_interval_seconds, _verify_recent),
        Job("erasure_retry", s.erasure_retry_interval_seconds, _erasure_retry),
        Job("log_cleanup", 86_400, _log_cleanup),
        *([Job("witness", s.witness_interval_seconds, _witness)] if s.witnesses else []),
    ]


def run_job(ledger: Ledger, job: Job, now: datetime | None = None) -> str:
    """Run ``job`` if this replica leads it and its current tick is not done yet."""
    return ledger.jobs.run_once(
        job.name, job.period_seconds, lambda: job.action(ledger), now or ledger.clock()
    )


def _add_jobs(scheduler: BaseScheduler, ledger: Ledger, job_list: list[Job]) -> None:
    for job in job_list:
        scheduler.add_job(
            run_job,
            IntervalTrigger(seconds=job.period_seconds),
            args=[ledger, job],
            id=job.name,
            name=job.name,
            # Run once right away: that is the catch-up after downtime (the tick check makes it
            # a no-op when the current tick is already done).
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )


def start_background(ledger: Ledger) -> BackgroundScheduler:
    """Start the jobs in background threads (used inside ``audit-ledger serve``)."""
    scheduler = BackgroundScheduler(timezone=UTC)
    _add_jobs(scheduler, ledger, default_jobs(ledger))
    scheduler.start()
    return scheduler


def run_scheduler_forever(ledger: Ledger, stop: threading.Event | None = None) -> None:
    """``audit-ledger scheduler``: run the jobs in the foreground until interrupted."""
    scheduler = BlockingScheduler(timezone=UTC)
    _add_jobs(scheduler, ledger, default_jobs(ledger))
    if stop is not None:
        threading.Thread(
            target=lambda: (stop.wait(), scheduler.shutdown(wait=False)), daemon=True
        ).start()
    scheduler.start()
