"""Issue #13 items 3 and 4 end to end: a real ``audit-ledger witness serve`` process, the ledger on
both backends (served by real uvicorn where HTTP is what is tested), C2SP tlog-witness v1.

* the witness cosigns consistent checkpoints and refuses fork, rollback, bad proof, unknown
  origin and bad signature with the spec's status, and keeps its state across a restart;
* the ledger submits, verifies and stores cosignatures and serves them after its signature;
* a split view (two databases under one checkpoint key) is caught by the witness;
* a witness that is down blocks no append and is retried later (the real scheduler);
* a witness ahead of the ledger's record answers 409 and the ledger resubmits from its size.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit_ledger.core.checkpoint import open_note, parse_verifier_key, split_note
from audit_ledger.core.cosignature import (
    cosignature_message,
    make_cosigner_key,
    parse_cosigner_key,
)
from audit_ledger.core.tlog_witness import format_add_checkpoint
from audit_ledger.ledger.service import Ledger
from audit_ledger.ledger.witnessing import COSIGNED, ERROR, REFUSED, UP_TO_DATE
from audit_ledger.settings import Settings, load_settings
from tests.conftest import ORIGIN
from tests.support.databases import fresh_settings
from tests.support.factories import event
from tests.support.polling import wait_until
from tests.support.servers import make_server, threaded_server
from tests.support.tlog import MemoryLog
from tests.support.witness import WitnessProcess, make_witness

pytestmark = pytest.mark.process


def log_vkey(settings: Settings) -> str:
    with_ledger = Ledger.open(settings)
    try:
        return with_ledger.log.verifier_key()
    finally:
        with_ledger.close()


@pytest.fixture
def witness(tmp_path: Path, settings: Settings) -> Iterator[WitnessProcess]:
    process = make_witness(tmp_path, log_vkey(settings))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def with_witnesses(settings: Settings, *witnesses: WitnessProcess, **extra: Any) -> Settings:
    return load_settings(
        database_url=settings.database_url,
        keys_dir=settings.keys_dir,
        checkpoint_origin=ORIGIN,
        witnesses=", ".join(w.config for w in witnesses),
        **extra,
    )


def append(ledger: Ledger, count: int) -> None:
    ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(count)]), "bot")


def check_cosigned(note: str, settings: Settings, witness: WitnessProcess, size: int) -> None:
    """The served note: log signature first, then a cosignature verifying under plain Ed25519."""
    text, sigs = split_note(note)
    assert text.split("\n")[1] == str(size)
    assert [s.name for s in sigs] == [ORIGIN, witness.vkey.split("+")[0]]
    open_note(note, parse_verifier_key(log_vkey(settings)))
    key = parse_cosigner_key(witness.vkey)
    blob = sigs[1].blob
    assert blob[:4] == key.key_hash
    timestamp = int.from_bytes(blob[4:12], "big")
    assert abs(timestamp - time.time()) < 600
    Ed25519PublicKey.from_public_bytes(key.public_key).verify(
        blob[12:], cosignature_message(text, timestamp)
    )


# --- the ledger submits, the witness cosigns ------------------------------------------------


def test_cosigned_checkpoint_is_served(settings: Settings, witness: WitnessProcess) -> None:
    configured = with_witnesses(settings, witness)
    with threaded_server(configured) as server:
        writer = server.headers("writer")
        answer = httpx.post(
            server.url + "/v1/events/batch",
            json={"events": [event() for _ in range(10)]},
            headers=writer,
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        ledger = Ledger.open(configured)
        try:
            first = ledger.log.checkpoint()  # 10 events + the principals' ledger_operations
            assert first is not None
            assert [r.kind for r in ledger.witnessing.submit_latest()] == [COSIGNED]
            note = httpx.get(
                server.url + "/v1/log/checkpoint", headers=server.headers("auditor"), timeout=30
            ).text
            check_cosigned(note, settings, witness, first.tree_size)

            append(ledger, 7)  # the next one travels with a consistency proof from the first
            second = ledger.log.checkpoint()
            assert second is not None
            assert second.tree_size == first.tree_size + 7
            assert [r.kind for r in ledger.witnessing.submit_latest()] == [COSIGNED]
            assert [r.kind for r in ledger.witnessing.submit_latest()] == [UP_TO_DATE]
            check_cosigned(
                ledger.log.cosigned_checkpoint() or "", settings, witness, second.tree_size
            )
            (lag,) = ledger.witnessing.lag()
            assert (lag.cosigned_size, lag.lag_entries) == (second.tree_size, 0)
            assert len(ledger.store.cosignatures(first.tree_size)) == 1  # the older one stays
        finally:
            ledger.close()


def test_409_resubmits_from_the_witness_size(settings: Settings, witness: WitnessProcess) -> None:
    ledger = Ledger.open(with_witnesses(settings, witness))
    try:
        append(ledger, 8)
        first = ledger.log.checkpoint()
        assert first is not None
        # Someone else (a monitor, another replica) already brought the witness to size 8: the
        # ledger's own record says "never cosigned", so it starts from 0 and gets a 409.
        assert witness.add_checkpoint(format_add_checkpoint(0, [], first.note)).status_code == 200
        append(ledger, 12)
        ledger.log.checkpoint()
        assert [r.kind for r in ledger.witnessing.submit_latest()] == [COSIGNED]
        assert [c.tree_size for c in ledger.store.cosignatures(20)] == [20]
        # The witness is at 20 now: from 8 it answers 409 with its size.
        stale = witness.add_checkpoint(format_add_checkpoint(0, [], first.note))
        assert (stale.status_code, stale.text) == (409, "20\n")
    finally:
        ledger.close()


def test_a_cosignature_by_an_unconfigured_key_is_not_kept(
    settings: Settings, witness: WitnessProcess
) -> None:
    """The ledger trusts only the configured key: a witness answering with another key (here:
    the ledger was given a different key under the same name) gets nothing stored."""
    name = witness.vkey.split("+")[0]
    other = make_cosigner_key(name, Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    configured = load_settings(
        database_url=settings.database_url,
        keys_dir=settings.keys_dir,
        checkpoint_origin=ORIGIN,
        witnesses=f"{witness.url} {other.encode()}",
    )
    ledger = Ledger.open(configured)
    try:
        append(ledger, 4)
        made = ledger.log.checkpoint()
        assert made is not None
        (result,) = ledger.witnessing.submit_latest()
        assert (result.kind, result.detail) == (ERROR, "CheckpointError")
        assert ledger.store.cosignatures(made.tree_size) == []
        assert ledger.log.cosigned_checkpoint() == made.note
        (lag,) = ledger.witnessing.lag()
        assert (lag.cosigned_size, lag.lag_entries, lag.age_seconds) == (0, 4, None)
    finally:
        ledger.close()


def test_split_view_is_caught(
    settings: Settings,
    witness: WitnessProcess,
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Two databases under one checkpoint key (the operator shows the auditor one history and
    the regulator another): each is validly signed, the witness cosigns only the first."""
    honest = Ledger.open(with_witnesses(settings, witness))
    (tmp_path / "other").mkdir()
    with fresh_settings(backend, request, tmp_path / "other") as (other_settings, _):
        other = load_settings(
            database_url=other_settings.database_url,
            keys_dir=settings.keys_dir,  # the same checkpoint key and origin
            checkpoint_origin=ORIGIN,
            witnesses=witness.config,
        )
        shadow = Ledger.open(other)
        try:
            append(honest, 10)
            honest.log.checkpoint()
            assert [r.kind for r in honest.witnessing.submit_latest()] == [COSIGNED]
            append(shadow, 12)
            shadow_cp = shadow.log.checkpoint()
            assert shadow_cp is not None
            open_note(shadow_cp.note, parse_verifier_key(log_vkey(settings)))  # validly signed
            # 409 (the witness is at 10), then from 10 the proof cannot lead to its root: 422.
            assert [r.kind for r in shadow.witnessing.submit_latest()] == [REFUSED]
            assert shadow.store.cosignatures(12) == []
            assert split_note(shadow.log.cosigned_checkpoint() or "")[1][-1].name == ORIGIN
            # Same size as the honest one, other root: a fork, 409.
            append(honest, 2)
            honest.log.checkpoint()
            assert [r.kind for r in honest.witnessing.submit_latest()] == [COSIGNED]
            fork = witness.add_checkpoint(format_add_checkpoint(12, [], shadow_cp.note))
            assert (fork.status_code, fork.text) == (409, "12\n")
            assert fork.headers["content-type"] == "text/x.tlog.size"
        finally:
            shadow.close()
            honest.close()


# --- the witness alone, over HTTP -----------------------------------------------------------


def test_witness_statuses_and_restart(tmp_path: Path) -> None:
    log = MemoryLog(ORIGIN)
    log.append(50)
    witness = make_witness(tmp_path, log.verifier.encode())
    witness.start()
    try:
        ok = witness.add_checkpoint(log.request(0, 20))
        assert ok.status_code == 200
        assert ok.text.startswith(f"\u2014 {witness.vkey.split('+')[0]} ")
        fork = MemoryLog(ORIGIN, log.private)
        fork.append(30)
        same_size_fork = witness.add_checkpoint(fork.request(20, 20))
        assert same_size_fork.status_code == 409
        assert same_size_fork.headers["content-type"] == "text/x.tlog.size"
        assert same_size_fork.content == b"20\n"
        assert witness.add_checkpoint(fork.request(20, 30)).status_code == 422  # grown fork
        rollback = witness.add_checkpoint(format_add_checkpoint(20, [], log.note(10)))
        assert rollback.status_code == 400  # old size > checkpoint size
        assert witness.add_checkpoint(log.request(10, 10)).status_code == 409
        proof = log.proof(20, 40)
        proof[-1] = bytes(32)
        bad = witness.add_checkpoint(format_add_checkpoint(20, proof, log.note(40)))
        assert bad.status_code == 422
        stranger = MemoryLog("stranger.example/log")
        stranger.append(3)
        assert witness.add_checkpoint(stranger.request(0, 3)).status_code == 404
        impostor = MemoryLog(ORIGIN)
        impostor.append(3)
        assert witness.add_checkpoint(impostor.request(0, 3)).status_code == 403
        text, sigs = split_note(log.note(40))
        tampered = text.replace("\n40\n", "\n41\n") + "\n" + sigs[0].line()
        assert witness.add_checkpoint(format_add_checkpoint(20, [], tampered)).status_code == 403

        witness.stop()
        witness.start()  # same directory: the state is kept
        again = witness.add_checkpoint(log.request(0, 40))
        assert (again.status_code, again.content) == (409, b"20\n")
        assert witness.add_checkpoint(log.request(20, 40)).status_code == 200
        key = parse_cosigner_key(witness.vkey)
        assert base64.b64decode(witness.vkey.split("+", 2)[2])[1:] == key.public_key
    finally:
        witness.stop()


# --- a witness that is down: the real scheduler in ``audit-ledger serve`` -------------------


def test_down_witness_blocks_nothing_and_is_retried(settings: Settings, tmp_path: Path) -> None:
    witness = make_witness(tmp_path, log_vkey(settings))  # configured, not started yet
    server = make_server(settings, tmp_path)
    server.extra_env.update(
        AUDIT_LEDGER_SCHEDULER_ENABLED="true",
        AUDIT_LEDGER_CHECKPOINT_INTERVAL_SECONDS="1",
        AUDIT_LEDGER_WITNESS_INTERVAL_SECONDS="1",
        AUDIT_LEDGER_WITNESS_TIMEOUT_SECONDS="2",
        AUDIT_LEDGER_WITNESSES=witness.config,
    )
    server.start()
    try:
        auditor = server.headers("auditor")
        started = time.monotonic()
        for _ in range(5):
            answer = httpx.post(
                server.url + "/v1/events",
                json=event(),
                headers=server.headers("writer"),
                timeout=30,
            )
            assert answer.status_code == 201, answer.text
        assert time.monotonic() - started < 10

        def served() -> str:
            answer = httpx.get(server.url + "/v1/log/checkpoint", headers=auditor, timeout=30)
            return answer.text if answer.status_code == 200 else ""

        note = wait_until(served, timeout=60, message="no checkpoint while the witness is down")
        assert [s.name for s in split_note(note)[1]] == [ORIGIN]  # signed, not cosigned

        def failed_submissions() -> bool:
            metrics = httpx.get(server.url + "/metrics", timeout=30).text
            return any(
                line.startswith("ledger_witness_submissions_total{")
                and f'outcome="{ERROR}"' in line
                and 'witness="witness.test/w1"' in line
                for line in metrics.splitlines()
            )

        wait_until(failed_submissions, timeout=60, message="no failed submission counted")
        metrics = httpx.get(server.url + "/metrics", timeout=30).text
        assert 'ledger_witness_lag_entries{witness="witness.test/w1"}' in metrics

        witness.start()
        try:
            name = witness.vkey.split("+")[0]
            cosigned = wait_until(
                lambda: (n := served()) and name in n and n,
                timeout=60,
                message="the witness was not retried",
            )
            size = int(split_note(cosigned)[0].split("\n")[1])
            check_cosigned(cosigned, settings, witness, size)
        finally:
            witness.stop()
    finally:
        server.stop()
