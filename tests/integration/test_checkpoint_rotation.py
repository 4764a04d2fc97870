"""Checkpoint-key rotation on both backends (issue #13 item 7): checkpoints before the rotation
carry the old signature, those in the transition window both, those after ``--finish`` the new
one alone; ``verify`` accepts every one of them through the key history; a checkpoint signed by
neither key fails; a process that loaded the keys before the rotation follows it without a
restart; both steps are ``ledger_operations`` entries."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from audit_ledger.auditor.mirror import open_mirror
from audit_ledger.auditor.monitor import verify_mirror
from audit_ledger.core.checkpoint import (
    Checkpoint,
    parse_verifier_key,
    split_note,
    verify_checkpoint,
)
from audit_ledger.core.policy import key_history_policy
from audit_ledger.crypto.checkpoint_keys import HISTORY_FILE, PREVIOUS_FILE
from audit_ledger.errors import CheckpointError
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.schema import entries
from tests.conftest import ORIGIN
from tests.support.cli import assert_one_line_error, cli, env_for, run_cli
from tests.support.factories import event
from tests.support.tlog_keys import log_key


def _grow(ledger: Ledger, n: int = 3) -> StoredCheckpoint:
    ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(n)]), "bot")
    made = ledger.log.checkpoint()
    assert made is not None
    return made


def _signers(note: str) -> list[str]:
    return [sig.key_hash.hex() for sig in split_note(note)[1]]


def _operations(ledger: Ledger, event_type: str) -> list[dict[str, object]]:
    """The data of the ``ledger_operations`` entries of ``event_type``, as their reader sees it."""
    with ledger.store.reader() as conn:
        seqs = conn.execute(
            select(entries.c.seq).where(
                entries.c.category == "ledger_operations", entries.c.event_type == event_type
            )
        ).scalars()
        found = list(seqs)
    return [ledger.reads.view_for(("security_team",), seq).data for seq in found]  # type: ignore[misc]


def test_rotation_keeps_every_checkpoint_verifiable(
    ledger: Ledger,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = parse_verifier_key(ledger.log.verifier_key())
    before = _grow(ledger)
    assert _signers(before.note) == [old.key_hash.hex()]

    # A second process (a server) that loaded the keys before the rotation.
    with contextlib.closing(Ledger.open(settings)) as server:
        code, out, err = run_cli(monkeypatch, capsys, settings, "keys", "rotate-checkpoint")
        assert code == 0, err
        new = parse_verifier_key(out.strip())
        assert (new.name, new.public_key != old.public_key) == (ORIGIN, True)
        assert "signed by both keys" in err
        assert server.log.verifier_key() == new.encode()  # GET /v1/log/verifier-key
        window = _grow(server)  # the server co-signs without a restart
        assert sorted(_signers(window.note)) == sorted([old.key_hash.hex(), new.key_hash.hex()])
        for key in (old, new):  # a verifier knowing either key accepts it
            assert verify_checkpoint(window.note, key).size == window.tree_size

        code, out, err = run_cli(
            monkeypatch, capsys, settings, "keys", "rotate-checkpoint", "--finish"
        )
        assert code == 0, err
        assert out.strip() == new.encode()
        after = _grow(server)
        assert _signers(after.note) == [new.key_hash.hex()]
        with pytest.raises(CheckpointError, match="no signature by the verifier key"):
            verify_checkpoint(after.note, old)

        report = server.verification.run(jobs=1)
        assert report.ok, report.problem
        stored = len(ledger.store.checkpoints())
        assert report.checkpoints == stored >= 5

    history = (settings.keys_dir / HISTORY_FILE).read_text().splitlines()
    assert history == [old.encode(), new.encode()]
    assert not (settings.keys_dir / PREVIOUS_FILE).exists()
    with contextlib.closing(Ledger.open(settings)) as fresh:
        assert fresh.verification.run(jobs=1).ok
    started = _operations(ledger, "checkpoint_key_rotation_started")
    finished = _operations(ledger, "checkpoint_key_rotation_finished")
    assert started == [{"actor": "cli", "old_key": old.encode(), "new_key": new.encode()}]
    assert finished == [{"actor": "cli", "retired_key": old.encode(), "key": new.encode()}]

    # verify with keys held outside the keys directory: the history passes, one key does not.
    def verify(*trust: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, settings, "verify", "--jobs", "1", *trust)

    assert verify("--verifier-key", old.encode(), "--verifier-key", new.encode())[0] == 0
    policy = settings.keys_dir.parent / "history.policy"
    policy.write_text(f"log {new.encode()}\nlog {old.encode()}\nquorum none\n")
    assert verify("--policy", str(policy))[0] == 0
    code, _, err = verify("--verifier-key", old.encode())
    assert code == 1
    assert "no signature by a log key" in err
    code, _, err = verify("--verifier-key", new.encode())
    assert code == 1
    assert "no signature by a log key" in err
    assert str(before.tree_size) in err  # the first checkpoint, signed by the old key alone

    # A checkpoint signed by neither key fails verification.
    stranger = log_key(ORIGIN)
    ledger.appends.append(ledger.appends.prepare_batch([event()]), "bot")
    size = ledger.log.size()
    root = ledger.log.root(size)
    forged = StoredCheckpoint(size, root, stranger.sign(Checkpoint(ORIGIN, size, root)))
    with ledger.store.writer() as tx:
        assert tx.insert_checkpoint(forged)
    report = ledger.verification.run(jobs=1)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.checkpoint == size
    assert "no signature by a log key" in report.problem.reason


@pytest.mark.process
def test_rotate_checkpoint_cli_process(settings: Settings, ledger: Ledger, tmp_path: Path) -> None:
    """The real program: start, a second start refused while the window is open, finish, a
    second finish refused; one line on stderr, exit 2, for each refusal."""
    _grow(ledger)
    env = env_for(settings.database_url, settings.keys_dir)
    started = cli("keys", "rotate-checkpoint", env=env)
    assert started.returncode == 0, started.stderr
    new = parse_verifier_key(started.stdout.strip())
    assert "publish the new verifier key" in started.stderr
    again = cli("keys", "rotate-checkpoint", env=env)
    assert "transition window" in assert_one_line_error(again)
    finished = cli("keys", "rotate-checkpoint", "--finish", env=env)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == new.encode()
    assert "no checkpoint-key rotation is in progress" in assert_one_line_error(
        cli("keys", "rotate-checkpoint", "--finish", env=env)
    )
    verified = cli("verify", "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


def test_export_follows_a_rotation(ledger: Ledger, settings: Settings, tmp_path: Path) -> None:
    """A mirror exported under the old key keeps being extended after the rotation (export
    trusts the whole key history), and re-checks offline with both keys."""

    old = parse_verifier_key(ledger.log.verifier_key())
    mirror_dir = tmp_path / "mirror"

    def export() -> int:
        with open_mirror(mirror_dir, create=True) as mirror:
            return ledger.export(mirror, inclusion_checks=4, principal="cli").tree_size

    first = _grow(ledger).tree_size
    assert export() == first
    ledger.checkpoint_rotation.start()
    ledger.checkpoint_rotation.finish()
    last = _grow(ledger).tree_size
    assert export() == last
    new = parse_verifier_key(ledger.log.verifier_key())
    with open_mirror(mirror_dir, create=False) as mirror:
        assert verify_mirror(mirror, key_history_policy([old, new])).tree_size == last
