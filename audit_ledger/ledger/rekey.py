"""Key-encryption-key rotation: every data key re-wrapped by the current KEK.

:func:`~audit_ledger.crypto.keys.rotate_kek` makes a new KEK and keeps the old one as retired;
:func:`rewrap_data_keys` then moves every undestroyed data key to the new one, a batch of rows
per transaction. Rows are locked while they are re-wrapped, so a concurrent erasure or retention
run destroys either the old wrapping or the new one, never loses the race. Appends go on
meanwhile: data keys are read through any KEK the provider knows, and a provider notices the
new KEK before it wraps its next data key.

Leaves never change: a wrapped key is not part of any header, so the chain, the tree and every
proof stay valid, and payloads (sealed by the data keys, not the KEK) are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit_ledger.crypto.keys import EXTERNAL_KEY, KeyProvider
from audit_ledger.errors import ExternalKeyMissingError
from audit_ledger.storage.store import Store

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


def rewrap_data_keys(
    store: Store, provider: KeyProvider, batch: int = REWRAP_BATCH
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
