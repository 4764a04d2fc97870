"""Data-key selection and caching (DESIGN §3: period and subject scopes, 2**28 uses per key).

The database holds data keys only wrapped by the KEK; this ring unwraps them on demand and keeps
the unwrapped keys in process memory by key id. Whether a key may still be *used* is always read
from the database inside the locked write transaction — a key destroyed by retention or erasure
in another process is never chosen again, whatever this cache holds.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from audit_ledger.crypto.envelope import MAX_SEALS_PER_KEY, DataKey
from audit_ledger.crypto.keys import KeyProvider, new_key_id
from audit_ledger.errors import CryptoError
from audit_ledger.storage.keys import StoredKey
from audit_ledger.storage.store import WriteTx


class DataKeyRing:
    """Chooses, creates and unwraps data keys."""

    def __init__(self, provider: KeyProvider, max_uses: int = MAX_SEALS_PER_KEY) -> None:
        self.provider = provider
        self.max_uses = max_uses
        self._cache: dict[str, DataKey] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DataKeyRing(kek_id={self.provider.kek_id!r}, cached={len(self._cache)})"

    def unwrap(self, stored: StoredKey) -> DataKey:
        """The usable key for a stored row (the caller has checked it is not destroyed)."""
        with self._lock:
            key = self._cache.get(stored.key_id)
        if key is None:
            if stored.wrapped is None:
                raise CryptoError(f"data key {stored.key_id} has been destroyed")
            key = self.provider.unwrap(stored.key_id, stored.wrapped, stored.kek_id)
            with self._lock:
                self._cache[stored.key_id] = key
        return key

    def forget(self, key_id: str) -> None:
        """Drop a destroyed key from memory."""
        with self._lock:
            self._cache.pop(key_id, None)

    def reserve(
        self,
        tx: WriteTx,
        category: str,
        scope_kind: str,
        needs: Mapping[str, int],
        now: str,
    ) -> dict[str, DataKey]:
        """Pick (or create) one key per scope value for ``needs[value]`` seals; count the uses.

        Must run inside the locked write transaction so use counts cannot race.
        """
        chosen: dict[str, StoredKey] = {}
        for row in tx.usable_keys(category, scope_kind, list(needs)):
            if row.scope_value not in chosen and row.uses + needs[row.scope_value] <= self.max_uses:
                chosen[row.scope_value] = row
        out: dict[str, DataKey] = {}
        uses: dict[str, int] = {}
        for value, count in needs.items():
            row_or_none = chosen.get(value)
            if row_or_none is None:
                key = DataKey.generate(new_key_id())
                # Subject keys are the erasable ones: their material stays out of the database
                # (and so out of its backups); period keys are stored wrapped by the KEK.
                wrapped = (
                    self.provider.store_external(key)
                    if scope_kind == "subject"
                    else self.provider.wrap(key)
                )
                tx.insert_key(
                    StoredKey(
                        key_id=key.key_id,
                        category=category,
                        scope_kind=scope_kind,
                        scope_value=value,
                        kek_id=wrapped.kek_id,
                        wrapped=wrapped.blob,
                        uses=0,
                        created_at=now,
                    )
                )
                with self._lock:
                    self._cache[key.key_id] = key
            else:
                key = self.unwrap(row_or_none)
            out[value] = key
            uses[key.key_id] = count
        tx.add_key_uses(uses)
        return out
