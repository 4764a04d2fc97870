"""Key-encryption-key rotation: every data key re-wrapped by the current KEK.

The key provider makes a new KEK and keeps the old one as retired (:meth:`Keys.rotate_kek`
never touches key files itself); :func:`rewrap_data_keys` then moves every undestroyed data
key to the new one, a batch of rows per transaction. Rows are locked while they are
re-wrapped, so a concurrent erasure or retention run destroys either the old wrapping or the
new one, never loses the race. Appends go on meanwhile: data keys are read through any KEK the
provider knows, and a provider notices the new KEK before it wraps its next data key.

Leaves never change: a wrapped key is not part of any header, so the chain, the tree and every
proof stay valid, and payloads (sealed by the data keys, not the KEK) are not touched.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from audit_ledger.crypto.keys import EXTERNAL_KEY, KeyProvider
from audit_ledger.errors import ExternalKeyMissingError
from audit_ledger.ledger.operations import Operations
from audit_ledger.storage.store import WriteTx

#: Rows re-wrapped per transaction (subject keys cost a file write and fsync each).
REWRAP_BATCH = 100


@dataclass(frozen=True, slots=True)
class RewrapReport:
    kek_id: str
    #: data keys now wrapped by ``kek_id``
    rewrapped: int
    #: subject keys whose file was already gone (erased; a restored backup still names them)
    missing: int

    def to_dict(self) -> dict[str, object]:
        return {"kek_id": self.kek_id, "rewrapped": self.rewrapped, "missing": self.missing}


class KeyStore(Protocol):
    """What key management needs of storage."""

    def writer(self) -> AbstractContextManager[WriteTx]: ...

    def kek_ids_in_use(self) -> set[str]: ...


def rewrap_data_keys(
    store: KeyStore, provider: KeyProvider, batch: int = REWRAP_BATCH
) -> RewrapReport:
    """Re-wrap every undestroyed data key that another KEK than the current one wraps."""
    target = provider.kek_id
    rewrapped = missing = 0
    after = ""
    while True:
        with store.writer() as tx:
            rows = tx.lock_keys_to_rewrap(target, after, batch)
            for row in rows:
                if row.wrapped is None:  # not selected: destroyed keys have nothing to re-wrap
                    continue
                try:
                    new = provider.rewrap(row.key_id, row.wrapped, row.kek_id)
                except ExternalKeyMissingError:
                    # Nothing left to wrap: name the current KEK so the old one can go.
                    tx.set_key_wrap(row.key_id, target, EXTERNAL_KEY)
                    missing += 1
                    continue
                tx.set_key_wrap(row.key_id, new.kek_id, new.blob)
                rewrapped += 1
        if len(rows) < batch:
            return RewrapReport(target, rewrapped, missing)
        after = rows[-1].key_id


class Keys:
    """KEK rotation and pruning, each recorded as an operation."""

    def __init__(self, store: KeyStore, provider: KeyProvider, operations: Operations) -> None:
        self.store = store
        self.provider = provider
        self.operations = operations

    def rotate_kek(self, *, actor: str = "cli") -> tuple[str, RewrapReport]:
        """Make a new KEK (the old one is kept as retired), re-wrap every data key with it and
        record the rotation; returns the old KEK's id and what was re-wrapped."""
        old_id = self.provider.rotate_kek()
        report = rewrap_data_keys(self.store, self.provider)
        self.operations.record(
            "kek_rotated", {"actor": actor, "retired_kek_id": old_id, **report.to_dict()}
        )
        return old_id, report

    def prune_keks(self, *, actor: str = "cli") -> tuple[RewrapReport, list[str], list[str]]:
        """Re-wrap keys that processes still running on a retired KEK made meanwhile, then
        delete every retired KEK no data key needs; returns the re-wrap, removed and kept ids."""
        report = rewrap_data_keys(self.store, self.provider)
        in_use = self.store.kek_ids_in_use()
        retired = self.provider.retired_kek_ids()
        removed = [kek_id for kek_id in retired if kek_id not in in_use]
        for kek_id in removed:
            self.provider.remove_retired_kek(kek_id)
        kept = [kek_id for kek_id in retired if kek_id in in_use]
        if removed or report.rewrapped or report.missing:
            self.operations.record(
                "keks_pruned",
                {"actor": actor, "removed": removed, "kept": kept, **report.to_dict()},
            )
        return report, removed, kept
