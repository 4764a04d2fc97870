"""Bulk import with worker processes commits exactly what a one-process import commits.

``Ledger.import_lines`` with ``jobs`` > 1 parses and validates upcoming batches in worker
processes while this one commits. Compared with ``jobs=1`` on a twin database (same backend,
same keys): the same entries in the same order, the same counts, and — when a line is bad or
reuses an event_id — the same ``ImportStoppedError`` (line number, counts), with every line
before it committed and nothing after it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audit_ledger.errors import AuditLedgerError, ImportStoppedError
from audit_ledger.ledger.appends.service import ImportResult
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from tests.conftest import ORIGIN, create_pg_database, drop_pg_database, pg_url
from tests.support.cli import assert_one_line_error, cli, env_for
from tests.support.factories import event
from tests.support.processes import child_pids, unraisable_recorded, within

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]  # imports in worker processes

CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")

Lines = list[tuple[int, str]]


def _raws(count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(count):
        raw = event(CATEGORIES[n % 3], user_id=2000 + n % 11)
        if n % 4 == 0:
            raw["correlation_id"] = None
        out.append(raw)
    return out


def _numbered(texts: list[str]) -> Lines:
    """Line numbers as a file gives them, with a blank line skipped every 97 lines (so a line
    number is not an index)."""
    return [(i + 1 + i // 97, line) for i, line in enumerate(texts)]


def _lines(raws: list[dict[str, Any]]) -> Lines:
    return _numbered([json.dumps(r) for r in raws])


@pytest.fixture
def twin(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, keys_dir: Path
) -> Iterator[Ledger]:
    """A second empty ledger on the same backend with the same keys."""
    name = None
    if backend == "sqlite":
        path = tmp_path / "twin.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        name = create_pg_database(template=request.getfixturevalue("pg_template"))
        url = pg_url(name)
    led = Ledger.open(load_settings(database_url=url, keys_dir=keys_dir, checkpoint_origin=ORIGIN))
    try:
        yield led
    finally:
        led.close()
        if name is not None:
            drop_pg_database(name)


def _stored(ledger: Ledger) -> list[tuple[Any, ...]]:
    """What each entry is, independent of when it was recorded."""
    size = ledger.log.size()
    refs = ledger.store.refs_between(0, size)
    return [
        (e.seq, e.event_id, e.category, e.event_type, e.occurred_at, e.writer, refs.get(e.seq))
        for e in ledger.store.entries_between(0, size)
    ]


def _event_ids(ledger: Ledger) -> list[str]:
    return [e.event_id for e in ledger.store.entries_between(0, ledger.log.size())]


def _forget_frames(error: BaseException | None) -> None:
    while error is not None:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


def _stop(ledger: Ledger, lines: Lines, jobs: int, batch_size: int = 100) -> ImportStoppedError:
    """The ImportStoppedError of an import that must stop; checks it leaves no worker process
    behind. Exceptions ignored while the abandoned import is finalised are left to
    test_stopped_import_finalises_quietly."""
    with unraisable_recorded(), pytest.raises(ImportStoppedError) as caught:
        within(
            60, lambda: ledger.appends.import_lines(lines, "bulk", batch_size=batch_size, jobs=jobs)
        )
    error = caught.value
    with unraisable_recorded():
        _forget_frames(error)  # drop the import's frames (and what they hold) now
        del caught
    assert child_pids() == [], "worker processes were left behind"
    return error


# --- valid input -------------------------------------------------------------------------------


def test_parallel_import_commits_what_a_serial_one_does(ledger: Ledger, twin: Ledger) -> None:
    raws = _raws(2500)
    lines = _lines(raws)
    result = ledger.appends.import_lines(lines, "bulk", batch_size=100, jobs=2)
    assert result == ImportResult(appended=2500, already_present=0)
    assert child_pids() == []
    assert twin.appends.import_lines(lines, "bulk", batch_size=100, jobs=1) == result

    assert _event_ids(ledger) == [r["event_id"] for r in raws]
    assert _stored(ledger) == _stored(twin)
    assert ledger.verification.run(jobs=1).ok

    # The same input again: all of it already present, nothing appended.
    again = ledger.appends.import_lines(lines, "bulk", batch_size=100, jobs=2)
    assert again == ImportResult(appended=0, already_present=2500)
    assert ledger.log.size() == 2500
    # With more lines after it: only those are appended.
    more = _raws(30)
    extended = _lines(raws + more)
    assert ledger.appends.import_lines(extended, "bulk", batch_size=100, jobs=2) == ImportResult(
        30, 2500
    )
    assert twin.appends.import_lines(extended, "bulk", batch_size=100, jobs=1) == ImportResult(
        30, 2500
    )
    assert _stored(ledger) == _stored(twin)
    assert child_pids() == []


def test_batch_sizes_and_job_counts_do_not_change_the_result(ledger: Ledger, twin: Ledger) -> None:
    raws = _raws(250)
    lines = _lines(raws)
    assert ledger.appends.import_lines(lines, "bulk", batch_size=7, jobs=3) == ImportResult(250, 0)
    assert twin.appends.import_lines(lines, "bulk", batch_size=1000, jobs=2) == ImportResult(250, 0)
    assert _stored(ledger) == _stored(twin)
    assert _event_ids(ledger) == [r["event_id"] for r in raws]
    assert ledger.appends.import_lines([], "bulk", jobs=2) == ImportResult(0, 0)


def test_default_batch_size_with_workers(ledger: Ledger, twin: Ledger) -> None:
    """Batches of the default 1000 lines (~330 KB each, answers larger still: more than a pipe
    holds) go to the workers and come back without the two ends blocking each other."""
    raws = _raws(2500)
    lines = _lines(raws)
    result = within(15, lambda: ledger.appends.import_lines(lines, "bulk", jobs=2))
    assert result == ImportResult(appended=2500, already_present=0)
    assert _event_ids(ledger) == [r["event_id"] for r in raws]
    assert child_pids() == []


# --- a bad line --------------------------------------------------------------------------------

#: Index of the bad line: in the middle of the fifth of seven batches of 100.
BAD_AT = 456
COUNT = 700


def _float_amount(raw: dict[str, Any]) -> str:
    return json.dumps(raw).replace('"amount": "150000.00"', '"amount": 150000.5')


BAD_LINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "invalid JSON": lambda raw: json.dumps(raw)[:-7],
    "float amount": _float_amount,
    "unknown member": lambda raw: json.dumps({**raw, "surprise": 1}),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_bad_line_stops_both_modes_at_the_same_place(
    ledger: Ledger, twin: Ledger, kind: str
) -> None:
    raws = _raws(COUNT)
    assert raws[BAD_AT]["category"] == "financial_transactions"
    texts = [json.dumps(r) for r in raws]
    texts[BAD_AT] = BAD_LINES[kind](raws[BAD_AT])
    assert texts[BAD_AT] != json.dumps(raws[BAD_AT])
    lines = _numbered(texts)
    number = lines[BAD_AT][0]

    parallel = _stop(ledger, lines, jobs=2)
    serial = _stop(twin, lines, jobs=1)
    assert str(parallel) == str(serial)
    assert (parallel.line, parallel.appended, parallel.already_present) == (number, BAD_AT, 0)
    assert str(parallel).startswith(f"line {number}: ")
    assert str(parallel).endswith(f"(committed before it: {BAD_AT}, already present: 0)")
    # Everything before the bad line is committed, nothing after it.
    for led in (ledger, twin):
        assert _event_ids(led) == [r["event_id"] for r in raws[:BAD_AT]]

    # The corrected input completes the import.
    fixed = _lines(raws)
    assert ledger.appends.import_lines(fixed, "bulk", batch_size=100, jobs=2) == ImportResult(
        COUNT - BAD_AT, BAD_AT
    )
    assert twin.appends.import_lines(fixed, "bulk", batch_size=100, jobs=1) == ImportResult(
        COUNT - BAD_AT, BAD_AT
    )
    assert _event_ids(ledger) == [r["event_id"] for r in raws]
    assert _stored(ledger) == _stored(twin)
    assert ledger.verification.run(jobs=1).ok


def test_bad_line_names_the_problem_without_the_value(ledger: Ledger) -> None:
    raws = _raws(300)
    assert raws[249]["category"] == "financial_transactions"
    raws[249]["data"]["amount"] = "CANARY-AMOUNT-7x"
    lines = _lines(raws)
    error = _stop(ledger, lines, jobs=2)
    assert "data.amount" in str(error)
    assert "CANARY" not in str(error)
    assert (error.line, error.appended) == (lines[249][0], 249)


def test_stopped_import_finalises_quietly(ledger: Ledger) -> None:
    """After a stop, nothing of the abandoned import raises while it is finalised (Python
    would print "Exception ignored in: <generator object WorkerPool.map …>" on stderr)."""
    raws = _raws(COUNT)
    texts = [json.dumps(r) for r in raws]
    texts[BAD_AT] = "{not json"
    stopped: list[int] = []
    with unraisable_recorded() as ignored:
        try:
            ledger.appends.import_lines(_numbered(texts), "bulk", batch_size=100, jobs=2)
        except ImportStoppedError as exc:
            stopped.append(exc.line)
            _forget_frames(exc)
    assert stopped == [_numbered(texts)[BAD_AT][0]]
    assert ignored == []
    assert child_pids() == []


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of worker processes the pool had to kill (its last resort after a 10 s grace):
    a prompt stop kills none. What happened, not a stopwatch, so a loaded machine passes."""
    killed: list[int] = []
    kill = subprocess.Popen.kill

    def record_kill(proc: subprocess.Popen[bytes]) -> None:
        killed.append(proc.pid)
        kill(proc)

    monkeypatch.setattr(subprocess.Popen, "kill", record_kill)
    return killed


def test_stop_does_not_wait_for_unread_answers(ledger: Ledger, kills: list[int]) -> None:
    """A bad line in the second of ten batches: the workers hold answers for the batches after
    it (two each, more than their pipes take) that the stopping import never reads. Stopping
    must not wait for them: each worker exits on its own (EPIPE on the unread answer, EOF on
    its tasks) instead of sitting out the pool's 10 s grace and being killed."""
    raws = _raws(1000)
    texts = [json.dumps(r) for r in raws]
    texts[150] = "{not json"
    error = _stop(ledger, _numbered(texts), jobs=2)
    assert (error.line, error.appended) == (_numbered(texts)[150][0], 150)
    assert kills == [], "a worker had to be killed: stopping waited for it"


# --- a conflicting event_id --------------------------------------------------------------------


def _conflicting(source: int, at: int = BAD_AT, count: int = COUNT) -> tuple[list[Any], Lines]:
    """``count`` events where the one at ``at`` reuses the event_id of the one at ``source``
    with other content."""
    raws = _raws(count)
    raws[at] = {**raws[source], "occurred_at": "2026-11-29T00:00:00.000000Z"}
    return raws, _lines(raws)


@pytest.mark.parametrize(
    "source",
    [
        10,  # committed in an earlier batch
        420,  # earlier in the same batch
    ],
)
def test_conflict_stops_both_modes_at_the_same_place(
    ledger: Ledger, twin: Ledger, source: int
) -> None:
    _, lines = _conflicting(source)
    number = lines[BAD_AT][0]
    parallel = _stop(ledger, lines, jobs=2)
    serial = _stop(twin, lines, jobs=1)
    assert str(parallel) == str(serial)
    assert parallel.line == number, str(parallel)
    assert "event_id" in str(parallel)
    assert (parallel.appended, parallel.already_present) == (serial.appended, 0)
    assert _event_ids(ledger) == _event_ids(twin)
    assert ledger.log.size() == parallel.appended


@pytest.mark.parametrize("source", [10, 420])
def test_conflict_commits_every_line_before_it(ledger: Ledger, source: int) -> None:
    """As for a bad line: the lines before the conflicting one are committed (also those in its
    own batch), and the error counts them."""
    raws, lines = _conflicting(source)
    error = _stop(ledger, lines, jobs=2)
    assert error.line == lines[BAD_AT][0]
    assert (error.appended, error.already_present) == (BAD_AT, 0), str(error)
    assert _event_ids(ledger) == [r["event_id"] for r in raws[:BAD_AT]]


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return env_for(settings.database_url, settings.keys_dir)


def test_cli_append_with_jobs_stops_at_a_bad_line(
    env: dict[str, str], ledger: Ledger, tmp_path: Path
) -> None:
    raws = _raws(700)
    texts = [json.dumps(r) for r in raws]
    texts[449] = "{not json"
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(texts) + "\n")
    result = cli("append", str(path), "--jobs", "2", "--batch-size", "100", env=env)
    line = assert_one_line_error(result)
    assert "line 450" in line
    assert "committed before it: 449" in line
    assert result.stdout == ""
    assert ledger.log.size() == 449

    texts[449] = json.dumps(raws[449])
    path.write_text("\n".join(texts) + "\n")
    result = cli("append", str(path), "--jobs", "2", "--batch-size", "100", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"appended": 251, "already_present": 449}
    assert _event_ids(ledger) == [r["event_id"] for r in raws]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_cli_append_jobs_must_be_positive(
    env: dict[str, str], ledger: Ledger, tmp_path: Path, value: str
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(event()) + "\n")
    line = assert_one_line_error(cli("append", str(path), "--jobs", value, env=env))
    assert "--jobs" in line
    assert ledger.log.size() == 0


# --- workers without their keys ----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("missing", ["index.key", "the whole directory"])
def test_workers_without_keys_give_a_clear_error(
    ledger: Ledger, keys_dir: Path, tmp_path: Path, missing: str, kills: list[int]
) -> None:
    """The keys the importing process loaded are gone when the workers start: each worker
    fails to set up, and the import says why instead of hanging or committing anything."""
    if missing == "index.key":
        (keys_dir / "index.key").unlink()
    else:
        keys_dir.rename(tmp_path / "moved-keys")
    with pytest.raises(AuditLedgerError) as caught:
        ledger.appends.import_lines(_lines(_raws(250)), "bulk", batch_size=100, jobs=2)
    assert kills == [], "a worker had to be killed: the failed set-up left it hanging"
    message = str(caught.value)
    assert "missing key file" in message or "cannot read key file" in message, message
    assert "index.key" in message or "checkpoint.key" in message, message
    assert "Traceback" not in message
    assert ledger.log.size() == 0
    assert child_pids() == []
