"""Many OS processes appending to one ledger at once (DESIGN §5: one lock, contiguous seq).

Each worker (``tests/integration/workers.py``) is a separate Python process with its own
:class:`Ledger`, started together behind a file barrier. Afterwards the log must hold every
acknowledged event exactly once, at the seq and with the leaf hash its receipt named, seq must be
contiguous from 0, resubmissions (within a process, within a batch and across processes) must
have returned the original receipt, refused batches must have left nothing behind, and a full
verification must pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from audit_ledger.ledger.service import Ledger
from tests.conftest import ORIGIN
from tests.support.factories import event

pytestmark = pytest.mark.process
ROOT = Path(__file__).resolve().parents[2]
SHARED_EVENTS = 24
START_TIMEOUT = 120.0
RUN_TIMEOUT = 420.0

# backend -> (processes, new events appended by each)
SIZES = {"postgresql": (8, 1000), "sqlite": (4, 500)}


def _spawn(command: str, cfg: dict[str, Any], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    config = workdir / f"{name}.json"
    config.write_text(json.dumps(cfg))
    with (workdir / f"{name}.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.workers", command, str(config)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _stderr(workdir: Path, name: str) -> str:
    return (workdir / f"{name}.stderr").read_text(errors="replace")[-4000:]


def _run_workers(
    database_url: str, keys_dir: Path, workdir: Path, processes: int, count: int
) -> list[dict[str, Any]]:
    shared = [event() for _ in range(SHARED_EVENTS)]
    (workdir / "shared.json").write_text(json.dumps(shared))
    go = workdir / "go"
    names = [f"worker-{i}" for i in range(processes)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, name in enumerate(names):
            cfg = {
                "database_url": database_url,
                "keys_dir": str(keys_dir),
                "origin": ORIGIN,
                "worker": i,
                "seed": int.from_bytes(os.urandom(8), "big"),
                "count": count,
                "shared": str(workdir / "shared.json"),
                "ready": str(workdir / f"{name}.ready"),
                "go": str(go),
                "out": str(workdir / f"{name}.out.json"),
            }
            procs.append(_spawn("append", cfg, workdir, name))
        deadline = time.monotonic() + START_TIMEOUT
        while not all((workdir / f"{name}.ready").exists() for name in names):
            for name, proc in zip(names, procs, strict=True):
                assert proc.poll() is None, f"{name} died early:\n{_stderr(workdir, name)}"
            assert time.monotonic() < deadline, "workers did not get ready in time"
            time.sleep(0.02)
        go.touch()
        deadline = time.monotonic() + RUN_TIMEOUT
        for name, proc in zip(names, procs, strict=True):
            try:
                code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish in {RUN_TIMEOUT:.0f}s (hang?)")
            assert code == 0, f"{name} exited with {code}:\n{_stderr(workdir, name)}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return [json.loads((workdir / f"{name}.out.json").read_text()) for name in names]


@pytest.mark.slow
def test_concurrent_appenders_keep_one_contiguous_log(
    backend: str, database_url: str, keys_dir: Path, ledger: Ledger, tmp_path: Path
) -> None:
    processes, count = SIZES[backend]
    outputs = _run_workers(database_url, keys_dir, tmp_path, processes, count)

    # event_id -> (seq, leaf hash, recorded_at) from its first receipt, and who appended it.
    acked: dict[str, tuple[int, str, str]] = {}
    appended_by: dict[str, str] = {}
    refused: set[str] = set()
    roles: Counter[str] = Counter()
    replays = 0
    for out in outputs:
        writer = out["writer"]
        for sub in out["submissions"]:
            if sub["kind"] == "conflict":
                roles["conflict"] += 1
                refused.update(
                    eid
                    for eid, role in zip(sub["event_ids"], sub["roles"], strict=True)
                    if role == "rejected"
                )
                continue
            receipts = sub["receipts"]
            assert [r[1] for r in receipts] == sub["event_ids"], "receipts out of order"
            fresh_seqs = []
            recorded = set()
            for (seq, eid, leaf, recorded_at, replayed), role in zip(
                receipts, sub["roles"], strict=True
            ):
                roles[role] += 1
                if role in {"again", "dup"}:
                    assert replayed, f"{role} resubmission of {eid} not flagged as replayed"
                if role == "new":
                    assert not replayed, f"new event {eid} came back as a replay"
                first = acked.setdefault(eid, (seq, leaf, recorded_at))
                assert first == (seq, leaf, recorded_at), f"two receipts for {eid}"
                if replayed:
                    replays += 1
                else:
                    assert eid not in appended_by, f"{eid} acknowledged as new twice"
                    appended_by[eid] = writer
                    fresh_seqs.append(seq)
                    recorded.add(recorded_at)
            # One submission is one transaction under the head lock: its new entries are
            # consecutive, in batch order, with one commit clock.
            if fresh_seqs:
                assert fresh_seqs == list(range(fresh_seqs[0], fresh_seqs[0] + len(fresh_seqs)))
                assert len(recorded) == 1

    expected = processes * count + SHARED_EVENTS
    assert roles["new"] == processes * count
    assert roles["shared"] == processes * SHARED_EVENTS
    assert roles["again"] > 0
    assert replays == roles["again"] + roles["dup"] + (processes - 1) * SHARED_EVENTS
    assert len(acked) == expected
    assert set(appended_by) == set(acked), "an event was acknowledged only as a replay"
    assert not refused & set(acked)

    stored = ledger.store.entries_between(0, 2**62)  # every stored entry, whatever the head says
    assert ledger.log.size() == len(stored) == expected
    assert [e.seq for e in stored] == list(range(expected))
    assert len({e.event_id for e in stored}) == expected
    for entry in stored:
        seq, leaf, recorded_at = acked[entry.event_id]
        assert (entry.seq, entry.leaf_hash.hex(), entry.recorded_at) == (seq, leaf, recorded_at)
        assert entry.writer == appended_by[entry.event_id]

    assert ledger.log.checkpoint() is not None
    report = ledger.verification.run()
    assert report.ok, str(report.problem)
    assert report.size == expected
    assert report.checkpoints >= 1
