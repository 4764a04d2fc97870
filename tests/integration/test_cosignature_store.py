"""``storage.cosignatures`` on both backends: cosignatures per tree size, the latest per
witness key, duplicates ignored, rows append-only (migration 0003's guards), and the served
note assembled by ``Log.cosigned_checkpoint`` with the log signature first."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, update

from audit_ledger.core.checkpoint import split_note
from audit_ledger.core.cosignature import cosign, make_cosigner_key, verified_cosignatures
from audit_ledger.errors import StorageError
from audit_ledger.ledger.service import Ledger
from audit_ledger.storage.cosignatures import StoredCosignature
from audit_ledger.storage.schema import checkpoint_cosignatures
from tests.conftest import ORIGIN
from tests.support.factories import event


def _append(ledger: Ledger, count: int) -> None:
    ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(count)]), "bot")


def _store(ledger: Ledger, tree_size: int, note: str, name: str, private: Ed25519PrivateKey) -> str:
    key = make_cosigner_key(name, private.public_key().public_bytes_raw())
    body = split_note(note)[0]
    line = cosign(body, key, private.sign, 1_700_000_000 + tree_size).line()
    row = StoredCosignature(
        tree_size, name, key.key_hash.hex(), 1_700_000_000 + tree_size, line, "2026-12-05T00:00:00Z"
    )
    with ledger.store.writer() as tx:
        assert tx.insert_cosignature(row)
        assert not tx.insert_cosignature(row)  # once per witness key and size
    return line


def test_cosignatures_per_size_and_latest_per_witness(ledger: Ledger) -> None:
    w1, w2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    _append(ledger, 3)
    first = ledger.log.checkpoint()
    assert first is not None
    _store(ledger, 3, first.note, "w1.example/w", w1)
    _append(ledger, 2)
    second = ledger.log.checkpoint()
    assert second is not None
    line1 = _store(ledger, 5, second.note, "w1.example/w", w1)
    line2 = _store(ledger, 5, second.note, "w2.example/w", w2)

    assert [c.witness for c in ledger.store.cosignatures(5)] == ["w1.example/w", "w2.example/w"]
    assert [c.tree_size for c in ledger.store.cosignatures(3)] == [3]
    latest = ledger.store.latest_cosignatures()
    assert {k[0]: v.tree_size for k, v in latest.items()} == {"w1.example/w": 5, "w2.example/w": 5}

    served = ledger.log.cosigned_checkpoint()
    assert served == second.note + line1 + line2
    _, sigs = split_note(served)
    assert sigs[0].name == ORIGIN  # the log signature comes first
    keys = [
        make_cosigner_key(n, k.public_key().public_bytes_raw())
        for n, k in (("w1.example/w", w1), ("w2.example/w", w2))
    ]
    assert len(verified_cosignatures(served, keys)) == 2


def test_no_checkpoint_no_note(ledger: Ledger) -> None:
    assert ledger.log.cosigned_checkpoint() is None
    assert ledger.store.latest_cosignatures() == {}


@pytest.mark.parametrize("change", ["update", "delete"])
def test_cosignatures_are_append_only(ledger: Ledger, change: str) -> None:
    _append(ledger, 1)
    made = ledger.log.checkpoint()
    assert made is not None
    _store(ledger, 1, made.note, "w1.example/w", Ed25519PrivateKey.generate())
    statement = (
        update(checkpoint_cosignatures).values(line="forged")
        if change == "update"
        else delete(checkpoint_cosignatures)
    )
    with pytest.raises(StorageError), ledger.store.writer() as tx:
        tx.conn.execute(statement)
    assert len(ledger.store.cosignatures(1)) == 1
