"""Bulk import's commit pipeline (audit_ledger.ledger.bulk and Appender.seal_on/commit_sealed).

A batch sealed ahead of its transaction commits only if, under the head lock, the log is still
at the head it was sealed on, none of its event ids is present and its data keys can take the
uses; otherwise nothing of it is written and the ordinary path decides. Each way a prediction
can fail is forced here, then the pipeline is raced by real processes importing overlapping
files at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from audit_ledger.ledger.appends.bulk import CommitPipeline
from audit_ledger.ledger.appends.service import ImportResult
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.entries import Head
from tests.support.cli import env_for
from tests.support.factories import event

pytestmark = pytest.mark.timeout(180)


def _prepared(ledger: Ledger, raws: list[dict[str, Any]]) -> list[Any]:
    return [ledger.appends.prepare(r) for r in raws]


def _state(ledger: Ledger, raws: list[dict[str, Any]]) -> Head:
    """Append ``raws`` the ordinary way; the head a pipeline would seal its next batch on."""
    receipts, head = ledger.appender.append_tracked(_prepared(ledger, raws), "bulk")
    assert len(receipts) == len(raws)
    assert head is not None
    return head


def _ids(ledger: Ledger) -> list[str]:
    return [e.event_id for e in ledger.store.entries_between(0, ledger.log.size())]


def _key_uses(ledger: Ledger) -> int:
    with ledger.store.reader() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(uses), 0) FROM data_keys")).scalar_one())


def test_sealed_batch_commits_on_its_head(ledger: Ledger) -> None:
    state = _state(ledger, [event() for _ in range(3)])
    raws = [event() for _ in range(5)]
    sealed = ledger.appender.seal_on(state, _prepared(ledger, raws), "bulk")
    assert sealed is not None
    assert [r.seq for r in sealed.receipts] == [3, 4, 5, 6, 7]
    assert ledger.appender.commit_sealed(sealed)
    assert _ids(ledger)[3:] == [r["event_id"] for r in raws]
    # The receipts handed out before the commit are the ones the log holds.
    for receipt in sealed.receipts:
        entry = ledger.store.entry(receipt.seq)
        assert entry is not None
        assert entry.leaf_hash.hex() == receipt.leaf_hash
        assert entry.recorded_at == receipt.recorded_at
    assert _key_uses(ledger) == 8
    assert ledger.verification.run(jobs=1).ok


def test_sealed_batch_is_refused_after_another_append(ledger: Ledger) -> None:
    state = _state(ledger, [event()])
    sealed = ledger.appender.seal_on(state, _prepared(ledger, [event(), event()]), "bulk")
    assert sealed is not None
    other = event()
    ledger.appends.append(_prepared(ledger, [other]), "someone-else")
    uses = _key_uses(ledger)

    assert not ledger.appender.commit_sealed(sealed)
    assert ledger.log.size() == 2
    assert _ids(ledger)[1] == other["event_id"]
    assert _key_uses(ledger) == uses  # the refused batch counted no use
    assert ledger.verification.run(jobs=1).ok


def test_sealed_batch_with_a_logged_event_id_is_refused(ledger: Ledger) -> None:
    logged = event()
    state = _state(ledger, [logged])
    fresh = event()
    # seal_on does not probe (its caller does): the unique event_id refuses it at commit.
    sealed = ledger.appender.seal_on(state, _prepared(ledger, [fresh, logged]), "bulk")
    assert sealed is not None
    assert not ledger.appender.commit_sealed(sealed)
    assert _ids(ledger) == [logged["event_id"]]
    assert ledger.verification.run(jobs=1).ok


def test_sealed_batch_whose_key_cannot_take_the_uses_is_refused(ledger: Ledger) -> None:
    state = _state(ledger, [event() for _ in range(4)])
    sealed = ledger.appender.seal_on(state, _prepared(ledger, [event() for _ in range(3)]), "x")
    assert sealed is not None
    ledger.appender.keyring.max_uses = 6  # the key has 4 uses: 3 more would pass the limit
    assert not ledger.appender.commit_sealed(sealed)
    assert ledger.log.size() == 4
    assert _key_uses(ledger) == 4


def test_sealed_batch_whose_key_was_destroyed_is_refused(ledger: Ledger) -> None:
    subject = 4242
    state = _state(ledger, [event("data_privacy_events", user_id=subject)])
    ledger.erasure.erase_subject(subject)  # destroys the subject's key (and appends a record of it)
    # Sealed on the head the log has now, with the key this process still remembers.
    current = ledger.store.head()
    assert state.size == 1
    raws = [event("data_privacy_events", user_id=subject) for _ in range(2)]
    sealed = ledger.appender.seal_on(current, _prepared(ledger, raws), "bulk")
    assert sealed is not None
    assert not ledger.appender.commit_sealed(sealed)
    assert ledger.log.size() == 2  # the first event and the erasure record
    # The ordinary path reserves a new key for the subject.
    ledger.appends.append(_prepared(ledger, raws), "bulk")
    assert ledger.log.size() == 4
    assert ledger.verification.run(jobs=1).ok


def test_sealing_ahead_needs_known_keys_and_distinct_ids(ledger: Ledger) -> None:
    state = _state(ledger, [event()])
    # A scope no key is known for yet (a new subject): only the ordinary path can reserve it.
    privacy = _prepared(ledger, [event("data_privacy_events", user_id=77)])
    assert ledger.appender.seal_on(state, privacy, "bulk") is None
    # The same event_id twice in one batch: the ordinary path decides replay or conflict.
    twice = event()
    assert ledger.appender.seal_on(state, _prepared(ledger, [twice, twice]), "bulk") is None
    assert ledger.appender.seal_on(state, [], "bulk") is None


def test_pipeline_recovers_from_a_refused_batch(ledger: Ledger) -> None:
    """A writer appending between two batches makes the sealed one stale: the pipeline redoes
    it the ordinary way, in order, and keeps going."""
    raws = [event() for _ in range(12)]
    batches = [raws[i : i + 3] for i in range(0, 12, 3)]
    interloper = event()
    with CommitPipeline(ledger.appender, "bulk") as pipeline:
        for n, batch in enumerate(batches):
            pipeline.add(_prepared(ledger, batch), list(range(3 * n + 1, 3 * n + 4)))
            if n == 1:
                pipeline.finish()
                ledger.appends.append(_prepared(ledger, [interloper]), "someone-else")
        pipeline.finish()
    assert (pipeline.appended, pipeline.already_present) == (12, 0)
    ids = _ids(ledger)
    assert ids == [r["event_id"] for r in raws[:6]] + [interloper["event_id"]] + [
        r["event_id"] for r in raws[6:]
    ]
    assert _key_uses(ledger) == 13
    assert ledger.verification.run(jobs=1).ok


def test_rerun_with_replays_from_its_middle(ledger: Ledger) -> None:
    """A rerun whose replays start after new lines: no probe looks for them (the batches before
    held none), so the batch holding the first replays is sealed and refused at commit (the
    unique event id), decided the ordinary way, and probing goes on while replays last. Every
    event is in the log once, in file order; key uses count only what was written."""
    first = [event() for _ in range(40)]
    lines = [(n + 1, json.dumps(r)) for n, r in enumerate(first)]
    assert ledger.appends.import_lines(lines, "bulk", batch_size=10) == ImportResult(40, 0)
    before, after = [event() for _ in range(25)], [event() for _ in range(25)]
    rerun = before + first + after
    lines = [(n + 1, json.dumps(r)) for n, r in enumerate(rerun)]
    assert ledger.appends.import_lines(lines, "bulk", batch_size=10) == ImportResult(50, 40)
    assert _ids(ledger) == [r["event_id"] for r in first + before + after]
    assert _key_uses(ledger) == 90
    assert ledger.verification.run(jobs=1).ok


def test_import_counts_every_key_use(ledger: Ledger) -> None:
    raws = [event(("financial_transactions", "security_events")[n % 2]) for n in range(700)]
    lines = [(n + 1, json.dumps(r)) for n, r in enumerate(raws)]
    assert ledger.appends.import_lines(lines, "bulk", batch_size=50) == ImportResult(700, 0)
    assert _key_uses(ledger) == 700
    assert _ids(ledger) == [r["event_id"] for r in raws]
    assert ledger.verification.run(jobs=1).ok


def test_concurrent_imports_of_overlapping_files(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    """Three ``audit-ledger append`` processes import files that share a third of their lines,
    at once: every event is in the log exactly once, the log verifies, and the counts add up."""
    shared = [event() for _ in range(300)]
    files = []
    for n in range(3):
        own = [event(("financial_transactions", "security_events")[i % 2]) for i in range(600)]
        lines = [json.dumps(r) for r in own[:300] + shared + own[300:]]
        path = tmp_path / f"import-{n}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        files.append((path, own))
    env = env_for(settings.database_url, settings.keys_dir)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "audit_ledger.cli", "append", str(path), "--batch-size", "50"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path, _ in files
    ]
    outputs = [p.communicate(timeout=150) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, (out, err)
    expected = {r["event_id"] for _, own in files for r in own} | {r["event_id"] for r in shared}
    ids = _ids(ledger)
    assert len(ids) == len(set(ids)) == len(expected) == 2100
    assert set(ids) == expected
    # Each process's own lines keep their file order in the log.
    for _, own in files:
        position = {event_id: seq for seq, event_id in enumerate(ids)}
        seqs = [position[r["event_id"]] for r in own]
        assert seqs == sorted(seqs)
    assert _key_uses(ledger) == 2100
    assert ledger.verification.run(jobs=1).ok
