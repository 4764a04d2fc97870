"""WorkerPool: real worker subprocesses, answers in task order, bounded look-ahead, clean ends.

Every test runs with workers of both kinds: started (``python -m …worker_main``) and forked
from this process (what ``verify`` and bulk import get when the process has one thread and
closes its idle connections first).

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
from collections.abc import Callable, Generator, Iterator
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
    another_thread,
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


@pytest.fixture(params=["started", "forked"])
def release(request: pytest.FixtureRequest) -> Callable[[], bool] | None:
    """``WorkerPool(release=…)``: None starts the workers, a callable that allows it forks them."""
    return None if request.param == "started" else (lambda: True)


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


def test_map_keeps_task_order(release: Callable[[], bool] | None, setup: dict[str, Any]) -> None:
    tasks = [_task(n) for n in range(60)]
    with WorkerPool("prepare", setup, 3, release=release) as pool:
        assert len({w.pid for w in pool.workers}) == 3
        assert pool.forked == (release is not None)
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


def test_map_can_be_used_again_after_it_ran_out(
    release: Callable[[], bool] | None, setup: dict[str, Any]
) -> None:
    with WorkerPool("prepare", setup, 2, release=release) as pool:
        first = [r.numbers for r in pool.map([_task(1), _task(2), _task(4)])]
        second = [r.numbers for r in pool.map([_task(5)])]
        assert list(pool.map([])) == []
    assert first == [[n for n, _ in _task(t)] for t in (1, 2, 4)]
    assert second == [[n for n, _ in _task(5)]]


def test_endless_tasks_partly_consumed_then_closed(
    release: Callable[[], bool] | None, setup: dict[str, Any]
) -> None:
    drawn: list[int] = []

    def endless() -> Iterator[list[tuple[int, str]]]:
        for n in itertools.count():
            drawn.append(n)
            yield [(n, json.dumps(event()))]

    pool = WorkerPool("prepare", setup, 3, release=release)
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


def test_tasks_and_answers_larger_than_a_pipe_do_not_deadlock(
    release: Callable[[], bool] | None, setup: dict[str, Any]
) -> None:
    """A batch of 400 lines is ~130 KB, its answer ~150 KB: more than a pipe holds (64 KiB on
    Linux) both ways. Sending the look-ahead tasks must not wait on a worker that is itself
    waiting for its answer to be read."""
    tasks = [[(t * 1000 + i, json.dumps(event())) for i in range(400)] for t in range(6)]
    assert _pickled_size(tasks[0]) > 65536
    with WorkerPool("prepare", setup, 2, release=release) as pool:
        results = within(10, lambda: list(pool.map(tasks)))
    assert [r.numbers for r in results] == [[n for n, _ in task] for task in tasks]


def test_abandoned_map_with_large_unread_answers_closes_promptly(
    release: Callable[[], bool] | None,
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

    pool = WorkerPool("prepare", setup, 2, release=release)
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


def test_abandoned_map_finalised_after_close(
    release: Callable[[], bool] | None, setup: dict[str, Any]
) -> None:
    """A caller that stops early (a problem found, a bad line) closes the pool; the abandoned
    generator is finalised later — by the garbage collector, or explicitly — and must end
    quietly then, not raise (an ignored exception is printed on stderr)."""
    pool = WorkerPool("prepare", setup, 2, release=release)
    results = pool.map(_task(n) for n in range(20))
    next(results)
    pool.close()
    with unraisable_recorded() as ignored:
        try:
            _finalise(results)
        finally:
            del results
    assert ignored == []


def test_setup_error_reaches_the_caller(
    release: Callable[[], bool] | None, setup: dict[str, Any]
) -> None:
    (setup["keys_dir"] / "index.key").unlink()
    with (
        WorkerPool("prepare", setup, 2, release=release) as pool,
        pytest.raises(StorageError) as caught,
    ):
        list(pool.map([_task(0), _task(1), _task(2)]))
    assert "missing key file" in str(caught.value)
    assert "index.key" in str(caught.value)


def test_unreachable_database_in_a_worker(
    release: Callable[[], bool] | None, tmp_path: Path
) -> None:
    setup = {"database_url": "postgresql://nobody@127.0.0.1:1/nothing"}
    with (
        WorkerPool("verify", setup, 2, release=release) as pool,
        pytest.raises(DatabaseUnavailableError),
    ):
        list(pool.map([(0, 10), (10, 20)]))


@pytest.mark.parametrize("which", ["first", "all"])
def test_a_dead_worker_is_a_storage_error(
    release: Callable[[], bool] | None, setup: dict[str, Any], which: str
) -> None:
    pool = WorkerPool("prepare", setup, 3, release=release)
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


def test_a_worker_dying_before_its_first_task(
    release: Callable[[], bool] | None, setup: dict[str, Any]
) -> None:
    pool = WorkerPool("prepare", setup, 2, release=release)
    try:
        for worker in pool.workers:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        with pytest.raises(StorageError, match="a worker process exited unexpectedly"):
            list(pool.map(_task(n) for n in range(10)))
    finally:
        pool.close()


def test_busy_workers_stop_when_their_owner_is_killed(
    release: Callable[[], bool] | None, setup: dict[str, Any], tmp_path: Path
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
        tasks = [_task(0)] * 4
        with pool_owner(config, "prepare", setup, tasks, fork=release is not None) as (
            owner,
            workers,
        ):
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


def test_no_fork_while_another_thread_runs(setup: dict[str, Any]) -> None:
    """A thread might hold a lock across the fork that the child then waits on forever (the
    service's threads, say): with one running, the workers are started instead."""
    asked: list[bool] = []
    with (
        another_thread(),
        WorkerPool("prepare", setup, 2, release=lambda: asked.append(True) or True) as pool,
    ):
        assert not pool.forked
        assert [r.numbers for r in pool.map([_task(1)])] == [[n for n, _ in _task(1)]]
    assert asked == [], "connections were closed for a fork that did not happen"


def test_no_fork_when_a_connection_is_in_use(setup: dict[str, Any]) -> None:
    with WorkerPool("prepare", setup, 2, release=lambda: False) as pool:
        assert not pool.forked
        assert [r.numbers for r in pool.map([_task(2)])] == [[n for n, _ in _task(2)]]


def test_forked_workers_are_named_and_hold_no_other_workers_pipes(setup: dict[str, Any]) -> None:
    """Each forked worker closes this process's ends of the pipes of the workers forked before
    it: a copy left open would keep that worker from seeing its stdin end when the pool closes
    (closing would then wait for the kill)."""
    with WorkerPool("prepare", setup, 3, release=lambda: True) as pool:
        assert pool.forked
        assert len(list(pool.map(_task(n) for n in range(3)))) == 3  # each is past its start
        for worker in pool.workers:
            assert Path(f"/proc/{worker.pid}/comm").read_text().strip() == "ledger-worker"
            assert worker.stdin is not None
            assert worker.stdout is not None
            own = {_target("self", worker.stdin.fileno()), _target("self", worker.stdout.fileno())}
            # Its two pipes (tasks in, answers out), none of its siblings' nor this process's
            # others; stdin, stdout and stderr are /dev/null.
            assert _pipes(worker.pid) == own
            assert {_target(worker.pid, fd) for fd in (0, 1, 2)} == {"/dev/null"}
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert all(w.returncode == 0 for w in pool.workers)


def _target(pid: int | str, fd: int | str) -> str:
    return str(Path(f"/proc/{pid}/fd/{fd}").readlink())


def _pipes(pid: int) -> set[str]:
    targets = {_target(pid, fd.name) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    return {t for t in targets if t.startswith("pipe:")}
