"""The every-minute incremental verification (issue #15 item 3), on both backends: it reads only
what is new since the last verified checkpoint (plus a bounded sweep of older entries), finds
tampering with new entries, the anchor checkpoint, the tree's right edge, the tail, the head row
and — through the sweep and the signed root — old entries; and a failure stays a failure.

A log of 200 entries with checkpoints at 30, 65, 100 and 150 (50 entries not yet checkpointed)
is built once per backend; each test tampers with a fresh copy (guards off, as a superuser)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from audit_ledger.core.checkpoint import Verifier
from audit_ledger.ledger.service import Ledger
from audit_ledger.ledger.verify_recent import STATE_JOB, SWEEP_JOB, RecentVerification
from audit_ledger.observability import metrics
from audit_ledger.scheduler import default_jobs, run_job
from audit_ledger.storage import jobs
from tests.support.factories import event
from tests.support.tamper import Case, Template, flip, populated_template, tampering_copy

SIZE, CHECKPOINTS = 200, (30, 65, 100, 150)
NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)


def _populate(ledger: Ledger) -> None:
    done = 0
    for upto in (*CHECKPOINTS, SIZE):
        raws = [event(user_id=1000 + n % 7) for n in range(done, upto)]
        ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        done = upto
        if upto in CHECKPOINTS:
            assert ledger.log.checkpoint() is not None


def _intact(ledger: Ledger) -> None:
    assert ledger.verification.run().ok


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Template]:
    with populated_template(request, tmp_path_factory.mktemp("recent"), _populate, _intact) as t:
        yield t


@pytest.fixture
def case(template: Template, tmp_path: Path) -> Iterator[Case]:
    with tampering_copy(template.backend, template.location, template.keys_dir, tmp_path) as c:
        yield c


def _verifier(case: Case) -> Verifier:
    return case.ledger.recent_verification.verifier


def _state(case: Case) -> tuple[int | None, int | None]:
    runs = jobs.runs(case.ledger.store)
    return (
        runs[STATE_JOB][0] if STATE_JOB in runs else None,
        runs[SWEEP_JOB][0] if SWEEP_JOB in runs else None,
    )


# --- an intact log ------------------------------------------------------------------------------


def test_reads_only_what_is_new_since_the_last_verified_checkpoint(case: Case) -> None:
    recent = case.ledger.recent_verification
    first = recent.run(NOW)
    assert first.ok, first.problem
    # No run yet: anchored on the latest signed checkpoint; the 50 entries after it verified.
    assert (first.anchor, first.size, first.new_entries) == (150, SIZE, 50)
    assert first.swept == (0, 150)
    assert _state(case) == (150, 0)  # the sweep wrapped around

    # 30 more entries and a checkpoint: the next run reads those 80, not the 230.
    raws = [event() for _ in range(30)]
    case.ledger.appends.append(case.ledger.appends.prepare_batch(raws), "bot")
    assert case.ledger.log.checkpoint() is not None
    second = recent.run(NOW)
    assert second.ok, second.problem
    assert (second.anchor, second.size, second.new_entries, second.checkpoints) == (
        150,
        230,
        80,
        1,
    )
    assert _state(case)[0] == 230
    third = recent.run(NOW)
    assert (third.anchor, third.new_entries, third.checkpoints) == (230, 0, 0)


def test_the_sweep_walks_the_old_entries_round_robin(case: Case) -> None:
    recent = RecentVerification(case.ledger.store, _verifier(case), window=64)
    swept = [recent.run(NOW).swept for _ in range(4)]
    assert swept == [(0, 64), (64, 128), (128, 150), (0, 64)]


def test_a_log_never_checkpointed_is_verified_from_its_start(
    template: Template, tmp_path: Path
) -> None:
    with tampering_copy(template.backend, template.location, template.keys_dir, tmp_path) as case:
        case.run("DELETE FROM checkpoints")
        report = case.ledger.recent_verification.run(NOW)
        assert report.ok, report.problem
        assert (report.anchor, report.new_entries) == (0, SIZE)
        assert _state(case) == (None, None)  # nothing signed to anchor on yet


# --- tampering ----------------------------------------------------------------------------------


def _fails_at(case: Case, recent: RecentVerification | None = None) -> int | None:
    report = (recent or case.ledger.recent_verification).run(NOW)
    assert report.problem is not None, "tampering went unnoticed"
    return report.problem.seq if report.problem.seq is not None else report.problem.checkpoint


def test_a_new_entry_changed(case: Case) -> None:
    leaf = case.one("SELECT leaf FROM entries WHERE seq = 180")
    case.run("UPDATE entries SET leaf = :l WHERE seq = 180", l=flip(leaf, len(leaf) // 2))
    assert _fails_at(case) == 180
    # Not forgotten: the state did not move past it, the next run fails again.
    assert _state(case) == (None, None)
    assert _fails_at(case) == 180


def test_an_old_entry_changed_is_found_by_the_sweep(case: Case) -> None:
    assert case.ledger.recent_verification.run(NOW).ok
    leaf = case.one("SELECT leaf FROM entries WHERE seq = 64")
    case.run("UPDATE entries SET leaf = :l WHERE seq = 64", l=flip(leaf, 10))
    assert _fails_at(case) == 64


def test_an_old_stored_leaf_hash_changed_is_found_on_a_later_sweep(case: Case) -> None:
    """Below the anchor and outside the first sweep window: the second run's window has it."""
    recent = RecentVerification(case.ledger.store, _verifier(case), window=64)
    assert recent.run(NOW).ok  # sweeps 0..63
    old = case.one("SELECT leaf_hash FROM entries WHERE seq = 100")
    new = flip(old, 0)
    case.run("UPDATE entries SET leaf_hash = :h WHERE seq = 100", h=new)
    # The stored leaf hash no longer matches the leaf: the sweep of 64..127 names it.
    assert _fails_at(case, recent) == 100


def test_the_anchor_checkpoint_deleted_or_changed(case: Case) -> None:
    assert case.ledger.recent_verification.run(NOW).ok  # anchored on 150
    note = case.one("SELECT note FROM checkpoints WHERE tree_size = 150")
    case.run("UPDATE checkpoints SET note = :n WHERE tree_size = 150", n=note.replace("1", "2", 1))
    assert _fails_at(case) == 150
    case.run("DELETE FROM checkpoints WHERE tree_size = 150")
    assert _fails_at(case) == 150


def test_the_tree_edge_changed(case: Case) -> None:
    assert case.ledger.recent_verification.run(NOW).ok
    # 150 = 128 + 16 + 4 + 2: the edge's subtrees are (7,0), (4,8), (2,36), (1,74).
    old = case.one("SELECT hash FROM tree_nodes WHERE level = 4 AND idx = 8")
    case.run("UPDATE tree_nodes SET hash = :h WHERE level = 4 AND idx = 8", h=flip(old, 3))
    assert _fails_at(case) == 150


def test_the_tail_removed(case: Case) -> None:
    assert case.ledger.recent_verification.run(NOW).ok
    case.run("DELETE FROM entry_refs WHERE seq >= 140")
    case.run("DELETE FROM payloads WHERE seq >= 140")
    case.run("DELETE FROM entries WHERE seq >= 140")
    assert _fails_at(case) == 149


def test_the_head_row_changed(case: Case) -> None:
    case.run("UPDATE ledger_head SET last_recorded_at = '2099-01-01T00:00:00.000000Z'")
    assert _fails_at(case) == SIZE - 1


# --- the scheduled job: metric, error line --------------------------------------------------------


def _gauge(ledger: Ledger, name: str) -> float | None:
    text = metrics.render(metrics.LedgerStateCollector(ledger)).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def test_the_job_records_a_failure_as_a_metric(case: Case) -> None:
    (job,) = [j for j in default_jobs(case.ledger) if j.name == "verify_recent"]
    assert job.period_seconds == 60
    assert run_job(case.ledger, job, NOW) == "ran"
    assert _gauge(case.ledger, "ledger_last_incremental_verification_success") == 1
    leaf = case.one("SELECT leaf FROM entries WHERE seq = 190")
    case.run("UPDATE entries SET leaf = :l WHERE seq = 190", l=flip(leaf, 5))
    failures = metrics.VERIFICATION_FAILURES.labels("incremental")._value.get()
    assert run_job(case.ledger, job, NOW.replace(minute=1)) == "ran"
    assert _gauge(case.ledger, "ledger_last_incremental_verification_success") == 0
    assert metrics.VERIFICATION_FAILURES.labels("incremental")._value.get() == failures + 1
    assert _gauge(case.ledger, "ledger_last_incremental_verification_timestamp_seconds") == (
        NOW.replace(minute=1).timestamp()
    )
