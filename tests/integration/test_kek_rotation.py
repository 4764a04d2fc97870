"""KEK rotation on both backends: every data key re-wrapped, every payload still readable, the
log still verifying; erasure still shredding; retired KEKs pruned only when nothing needs them."""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path
from typing import Any

import pytest

from audit_ledger.crypto.keys import (
    EXTERNAL_KEY,
    RETIRED_KEKS_DIR,
    FileKeyProvider,
    retired_kek_ids,
)
from audit_ledger.crypto.secret import Secret
from audit_ledger.ledger.keys import RewrapReport
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.support.cli import run_cli
from tests.support.factories import event

ALL_READERS = ("compliance_officer", "privacy_officer", "security_team")


def _populate(ledger: Ledger) -> None:
    raws = [event("financial_transactions", user_id=u, order_id=f"ORD-{u}") for u in range(5)]
    raws += [event("data_privacy_events", user_id=u) for u in range(6)]  # a subject key each
    raws += [event("security_events", user_id=u) for u in range(3)]
    ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    ledger.erasure.erase_subject(5)  # one destroyed key, which nothing re-wraps


def _plaintexts(ledger: Ledger) -> dict[int, Any]:
    """Every entry's payload as its readers see it (decrypting through the key rows)."""
    out = {}
    for seq in range(ledger.log.size()):
        view = ledger.reads.view_for(ALL_READERS, seq)
        out[seq] = (view.payload_state, view.data)
    return out


def _key_rows(ledger: Ledger) -> dict[str, tuple[str, bytes | None]]:
    return {k.key_id: (k.kek_id, k.wrapped) for k in ledger.store.iter_keys()}


def _fresh(settings: Settings) -> contextlib.closing[Ledger]:
    """Another process's view: nothing cached, keys read from disk now."""
    return contextlib.closing(Ledger.open(settings))


def test_rotation_rewraps_every_live_key(ledger: Ledger, settings: Settings) -> None:
    _populate(ledger)
    before_rows = _key_rows(ledger)
    live = {k for k, (_, wrapped) in before_rows.items() if wrapped is not None}
    destroyed = set(before_rows) - live
    assert len(destroyed) == 1
    old_id = ledger.keys.provider.kek_id

    with _fresh(settings) as other:
        plaintexts = _plaintexts(other)
    assert sum(1 for state, data in plaintexts.values() if data is not None) >= 13

    retired, report = ledger.key_rotation.rotate_kek()
    assert retired == old_id
    assert (report.rewrapped, report.missing) == (len(live), 0)
    rows = _key_rows(ledger)
    for key_id in live:
        assert rows[key_id][0] == report.kek_id
        if before_rows[key_id][1] == EXTERNAL_KEY:  # subject keys stay in the key store
            assert rows[key_id][1] == EXTERNAL_KEY
        else:
            assert rows[key_id][1] != before_rows[key_id][1]
    for key_id in destroyed:
        assert rows[key_id] == before_rows[key_id]

    with _fresh(settings) as other:
        after = _plaintexts(other)
        assert {seq: after[seq] for seq in plaintexts} == plaintexts
        report_after = other.verification.run()
        assert report_after.ok, report_after.problem
        assert report_after.keys_checked == len(rows)
    # The rotation is on the record.
    last = ledger.store.leaves(ledger.log.size() - 1, ledger.log.size())[0][1]
    assert b'"event_type":"kek_rotated"' in last
    assert retired_kek_ids(settings.keys_dir) == [old_id]


def test_a_process_started_before_the_rotation_reads_and_writes_on(
    ledger: Ledger, settings: Settings
) -> None:
    _populate(ledger)
    with _fresh(settings) as running:
        # done by "another process": `ledger` still knows the old KEK only
        running.key_rotation.rotate_kek()
        new_id = running.keys.provider.kek_id
    with _fresh(settings) as reader:
        expected = _plaintexts(reader)
    # Its keys are re-wrapped by a KEK it has never seen: it reads them all the same...
    ledger.keyring._cache.clear()
    assert _plaintexts(ledger) == expected
    # ...and a new subject key it makes is wrapped by the new KEK, not the retired one.
    ledger.appends.append([ledger.appends.prepare(event("data_privacy_events", user_id=77))], "bot")
    newest = max(ledger.store.iter_keys(), key=lambda k: k.created_at + k.key_id)
    assert (newest.kek_id, newest.scope_kind) == (new_id, "subject")


def test_erasure_after_rotation_still_shreds(ledger: Ledger, settings: Settings) -> None:
    _populate(ledger)
    ledger.key_rotation.rotate_kek()
    report = ledger.erasure.erase_subject(2)
    assert report.to_dict()
    with _fresh(settings) as other:
        states = {
            v.header["refs"].get("user"): v.payload_state
            for v in (other.reads.view_for(ALL_READERS, s) for s in range(other.log.size()))
            if v.header["category"] == "data_privacy_events"
        }
        user2 = other.keys.indexer.index("user", 2)
        assert states[user2] == "erased"
        assert other.verification.run().ok


def test_prune_removes_retired_keks_only_when_nothing_needs_them(
    ledger: Ledger, settings: Settings
) -> None:
    _populate(ledger)
    old_id, _ = ledger.key_rotation.rotate_kek()
    # A process that had not noticed the rotation wrapped one key with the retired KEK.
    old_only = FileKeyProvider(
        _retired_secret(settings.keys_dir, old_id), settings.keys_dir / "subject-keys"
    )
    straggler = next(k for k in ledger.store.iter_keys() if k.scope_kind == "period")
    assert straggler.wrapped is not None
    key = ledger.keys.provider.unwrap(straggler.key_id, straggler.wrapped, straggler.kek_id)
    with ledger.store.writer() as tx:
        tx.set_key_wrap(key.key_id, old_id, old_only.wrap(key).blob)
    assert old_id in ledger.store.kek_ids_in_use()

    report, removed, kept = ledger.key_rotation.prune_keks()
    assert (report.rewrapped, removed, kept) == (1, [old_id], [])
    assert retired_kek_ids(settings.keys_dir) == []
    assert ledger.store.kek_ids_in_use() == {ledger.keys.provider.kek_id}
    with _fresh(settings) as other:
        assert other.keys.provider.known_kek_ids == {other.keys.provider.kek_id}
        assert other.verification.run().ok
        views = _plaintexts(other).values()
        assert all(data is not None for state, data in views if state == "present")

    # Nothing left to do: nothing recorded.
    size = ledger.log.size()
    assert ledger.key_rotation.prune_keks() == (RewrapReport(report.kek_id, 0, 0), [], [])
    assert ledger.log.size() == size


def _retired_secret(keys_dir: Path, kek_id: str) -> Secret:
    text = (keys_dir / RETIRED_KEKS_DIR / f"{kek_id}.key").read_text()
    return Secret(base64.b64decode(text))


def test_cli_rotate_and_prune(
    ledger: Ledger,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _populate(ledger)
    code, out, err = run_cli(monkeypatch, capsys, settings, "keys", "rotate-kek")
    assert code == 0, err
    assert out == ""
    assert "data keys re-wrapped" in err
    assert "keys prune-keks" in err
    code, out, err = run_cli(monkeypatch, capsys, settings, "keys", "prune-keks")
    assert code == 0, err
    assert err.startswith("removed retired key-encryption key kek-")
    code, out, err = run_cli(monkeypatch, capsys, settings, "verify")
    assert code == 0, err
