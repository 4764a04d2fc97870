"""WorkerPool: real worker subprocesses, answers in task order, bounded look-ahead, clean ends.

The "prepare" job validates numbered JSON lines; here it runs on in-memory lines with a
throwaway keys directory, so no database is needed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pickle
import signal
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from audit_ledger.crypto.keys import init_keys, load_keys
from audit_ledger.errors import DatabaseUnavailableError, StorageError
from audit_ledger.ledger.appends.prepare import PreparedLines, prepare_lines
from audit_ledger.ledger.workers import AHEAD, WorkerPool
from audit_ledger.policy import load_policy
from tests.support.factories import event
from tests.support.processes import (
    ORPHAN_TIMEOUT,
    alive_after,
    child_pids,
    has_open,
    kill_children,
    pool_owner,
    unraisable_recorded,
    within,
)

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]  # worker processes through pipes

ORIGIN = "test.example/ledger"
CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    keys_dir = tmp_path / "keys"
    init_keys(keys_dir, ORIGIN)
    return {
        "policy_file": None,
        "keys_dir": keys_dir,
        "origin": ORIGIN,
        "max_data_bytes": 64 * 1024,
    }


@pytest.fixture(autouse=True)
def _no_workers_left() -> Iterator[None]:
    assert child_pids() == []
    yield
    assert child_pids() == [], "worker processes were left behind"


def _task(number: int) -> list[tuple[int, str]]:
    """Lines of varying count (1..23), so the workers finish out of step; every 7th task has
    a bad line in it."""
    size = 1 + (number * 7) % 23
    first = number * 100
    lines = [(first + i, json.dumps(event(CATEGORIES[(number + i) % 3]))) for i in range(size)]
    if number % 7 == 3:
        lines[size // 2] = (first + size // 2, '{"event_id": ')
    return lines


def _finalise(results: Iterator[Any]) -> None:
    """Close an abandoned ``map`` (what the garbage collector would do to it)."""
    assert isinstance(results, Generator)
    results.close()


def test_map_keeps_task_order(setup: dict[str, Any]) -> None:
    tasks = [_task(n) for n in range(60)]
    with WorkerPool("prepare", setup, 3) as pool:
        assert len({w.pid for w in pool.workers}) == 3
        results = list(pool.map(tasks))
    assert all(w.returncode is not None for w in pool.workers)
    assert len(results) == len(tasks)
    # What the same function gives in this process, task by task.
    policy, indexer = load_policy(None), load_keys(setup["keys_dir"], ORIGIN).indexer
    for task, result in zip(tasks, results, strict=True):
        assert isinstance(result, PreparedLines)
        expected = prepare_lines(task, policy, indexer, max_data_bytes=setup["max_data_bytes"])
        assert result == expected
        assert result.numbers == [n for n, _ in task][: len(result.numbers)]
        assert [e.event_id for e in result.events] == [
            json.loads(line)["event_id"] for _, line in task[: len(result.events)]
        ]


def test_map_can_be_used_again_after_it_ran_out(setup: dict[str, Any]) -> None:
    with WorkerPool("prepare", setup, 2) as pool:
        first = [r.numbers for r in pool.map([_task(1), _task(2), _task(4)])]
        second = [r.numbers for r in pool.map([_task(5)])]
        assert list(pool.map([])) == []
    assert first == [[n for n, _ in _task(t)] for t in (1, 2, 4)]
    assert second == [[n for n, _ in _task(5)]]


def test_endless_tasks_partly_consumed_then_closed(setup: dict[str, Any]) -> None:
    drawn: list[int] = []

    def endless() -> Iterator[list[tuple[int, str]]]:
        for n in itertools.count():
            drawn.append(n)
            yield [(n, json.dumps(event()))]

    pool = WorkerPool("prepare", setup, 3)
    results = pool.map(endless())
    consumed = [r.numbers[0] for r in itertools.islice(results, 10)]
    assert consumed == list(range(10))
    # Tasks are drawn only as workers have room: a bounded look-ahead.
    assert len(drawn) <= 10 + AHEAD * 3, len(drawn)
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 5, "closing waited for the workers"
    assert all(w.returncode is not None for w in pool.workers)
    with contextlib.suppress(ValueError):  # see test_abandoned_map_finalised_after_close
        _finalise(results)


def _pickled_size(message: object) -> int:
    return len(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def test_tasks_and_answers_larger_than_a_pipe_do_not_deadlock(setup: dict[str, Any]) -> None:
    """A batch of 400 lines is ~130 KB, its answer ~150 KB: more than a pipe holds (64 KiB on
    Linux) both ways. Sending the look-ahead tasks must not wait on a worker that is itself
    waiting for its answer to be read."""
    tasks = [[(t * 1000 + i, json.dumps(event())) for i in range(400)] for t in range(6)]
    assert _pickled_size(tasks[0]) > 65536
    with WorkerPool("prepare", setup, 2) as pool:
        results = within(10, lambda: list(pool.map(tasks)))
    assert [r.numbers for r in results] == [[n for n, _ in task] for task in tasks]


def test_abandoned_map_with_large_unread_answers_closes_promptly(
    setup: dict[str, Any],
) -> None:
    """Tasks that fit in a pipe but answers that do not: when the caller stops consuming, the
    workers are blocked writing answers nobody reads. Closing the pool must not wait for them
    (a verify or an import that stops at a problem would hang that long)."""
    policy, indexer = load_policy(None), load_keys(setup["keys_dir"], ORIGIN).indexer
    task: list[tuple[int, str]] = []
    while _pickled_size(task) < 60_000:
        task.append((len(task), json.dumps(event())))
    answer = prepare_lines(task, policy, indexer, max_data_bytes=setup["max_data_bytes"])
    assert _pickled_size(("ok", answer)) > 66_000, "the answer must not fit in a pipe"

    pool = WorkerPool("prepare", setup, 2)
    try:
        results = pool.map(itertools.repeat(task))
        first = within(20, lambda: next(results))
        assert first.numbers == [n for n, _ in task]
        time.sleep(1)  # the workers answer their next tasks and block writing
        started = time.monotonic()
        within(60, pool.close)
        elapsed = time.monotonic() - started
        assert all(w.returncode is not None for w in pool.workers)
        with contextlib.suppress(ValueError):  # see test_abandoned_map_finalised_after_close
            _finalise(results)
    finally:
        kill_children()
        pool.close()
    assert elapsed < 5, f"closing took {elapsed:.1f}s"


def test_abandoned_map_finalised_after_close(setup: dict[str, Any]) -> None:
    """A caller that stops early (a problem found, a bad line) closes the pool; the abandoned
    generator is finalised later — by the garbage collector, or explicitly — and must end
    quietly then, not raise (an ignored exception is printed on stderr)."""
    pool = WorkerPool("prepare", setup, 2)
    results = pool.map(_task(n) for n in range(20))
    next(results)
    pool.close()
    with unraisable_recorded() as ignored:
        try:
            _finalise(results)
        finally:
            del results
    assert ignored == []


def test_setup_error_reaches_the_caller(setup: dict[str, Any]) -> None:
    (setup["keys_dir"] / "index.key").unlink()
    with WorkerPool("prepare", setup, 2) as pool, pytest.raises(StorageError) as caught:
        list(pool.map([_task(0), _task(1), _task(2)]))
    assert "missing key file" in str(caught.value)
    assert "index.key" in str(caught.value)


def test_unreachable_database_in_a_worker(tmp_path: Path) -> None:
    setup = {"database_url": "postgresql://nobody@127.0.0.1:1/nothing"}
    with WorkerPool("verify", setup, 2) as pool, pytest.raises(DatabaseUnavailableError):
        list(pool.map([(0, 10), (10, 20)]))


@pytest.mark.parametrize("which", ["first", "all"])
def test_a_dead_worker_is_a_storage_error(setup: dict[str, Any], which: str) -> None:
    pool = WorkerPool("prepare", setup, 3)
    try:
        results = pool.map(_task(n) for n in range(40))
        assert next(results).numbers
        victims = pool.workers[:1] if which == "first" else pool.workers
        for worker in victims:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        with pytest.raises(StorageError, match="a worker process exited unexpectedly"):
            list(results)
    finally:
        pool.close()
    assert all(w.returncode is not None for w in pool.workers)


def test_a_worker_dying_before_its_first_task(setup: dict[str, Any]) -> None:
    pool = WorkerPool("prepare", setup, 2)
    try:
        for worker in pool.workers:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        with pytest.raises(StorageError, match="a worker process exited unexpectedly"):
            list(pool.map(_task(n) for n in range(10)))
    finally:
        pool.close()


def test_busy_workers_stop_when_their_owner_is_killed(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """The process owning a pool is killed with SIGKILL while its workers are busy with
    something other than their pipes (an idle worker would see its stdin end): here their
    set-up reads a policy file that is a FIFO nobody writes to, standing in for a long task or
    a query waiting on a lock. They must stop anyway — the kernel sends them SIGTERM when their
    parent dies — not live on as orphans."""
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    # Held open for writing (O_RDWR never blocks on a FIFO): the workers' open() returns and
    # their read() waits for data that never comes.
    writer = os.open(fifo, os.O_RDWR)
    setup["policy_file"] = fifo
    config = tmp_path / "owner.json"
    try:
        with pool_owner(config, "prepare", setup, [_task(0)] * 4) as (owner, workers):
            deadline = time.monotonic() + 30
            while not all(has_open(pid, fifo) for pid in workers):
                assert owner.poll() is None, "the pool's owner exited"
                assert time.monotonic() < deadline, "the workers never reached their set-up"
                time.sleep(0.05)
            owner.kill()
            owner.wait()
            left = alive_after(workers, ORPHAN_TIMEOUT)
            assert left == [], f"workers {left} outlived the process that owned them"
    finally:
        os.close(writer)
