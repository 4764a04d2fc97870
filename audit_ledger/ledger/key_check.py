"""Proof, at start-up and for ``/readyz``, that the keys on disk are the ones the database needs.

A wrong ``kek.key`` (another installation's, or a wrong backup restored) is a valid 32-byte key:
loading it succeeds, and before this check the service started, said ``"keys": "ok"`` and then
failed every append and every plaintext read with a 500 (issue #12). So the service unwraps one
live data key per (KEK, scope kind) before it serves: a period key proves the KEK, a subject key
proves the key store (``subject-keys/``) too. An empty ledger has nothing to prove.

``/readyz`` repeats the check, cached for :data:`CACHE_SECONDS` so a probe every second costs
one small query every few seconds, never an unwrap per probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from audit_ledger.core.canonical import strict_loads
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.crypto.envelope import DataKey, payload_aad
from audit_ledger.crypto.keys import EXTERNAL_KEY, KeyProvider
from audit_ledger.errors import (
    AuditLedgerError,
    ConfigError,
    CryptoError,
    DatabaseUnavailableError,
    ExternalKeyMissingError,
)
from audit_ledger.ledger.appends.prepare import SUBJECT_REF
from audit_ledger.policy import Policy
from audit_ledger.storage.store import Store

CACHE_SECONDS = 5.0
OK = "ok"


class KeyCheck:
    """Unwraps a sample of the stored data keys with the provider's KEKs."""

    def __init__(
        self,
        store: Store,
        provider: KeyProvider,
        indexer: BlindIndexer | None = None,
        policy: Policy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.provider = provider
        self.indexer = indexer
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, str] | None = None

    def run(self) -> None:
        """Raise :class:`ConfigError` (one line naming the problem) unless every sampled key
        unwraps. Key and KEK ids are fingerprints, not secrets: naming them tells the operator
        which backup the database expects."""
        samples = self.store.live_key_samples()
        external_missing = 0
        externals = 0
        for stored in samples:
            if stored.wrapped is None:  # live rows only: never, but typed so
                continue
            external = stored.wrapped == EXTERNAL_KEY
            externals += external
            try:
                key = self.provider.unwrap(stored.key_id, stored.wrapped, stored.kek_id)
            except ExternalKeyMissingError:
                # One subject key gone (an erasure interrupted between file and row) is not a
                # wrong key store; every sampled one gone is.
                external_missing += 1
                continue
            except CryptoError as exc:
                raise ConfigError(
                    f"the keys directory does not unwrap the database's data keys ({exc}): "
                    "is kek.key (or retired-keks/) from another installation or backup?"
                ) from None
            if stored.scope_kind == "subject":
                self._check_index_key(key, stored.category, stored.scope_value)
        if externals and external_missing == externals:
            raise ConfigError(
                "the subject key store (subject-keys/ in the keys directory) holds none of the "
                "database's live subject keys: restore it from the matching backup"
            )

    def _check_index_key(self, key: DataKey, category: str, scope_value: str) -> None:
        """A subject key's scope is the blind index of its subject (DESIGN §3): open one payload
        it sealed and recompute that index, which proves ``index.key`` too — a wrong one would
        make every search by user or order id silently find nothing."""
        if self.indexer is None or self.policy is None or category not in self.policy.categories:
            return
        field = self.policy.categories[category].subject_field
        sealed = self.store.one_sealed_by(key.key_id) if field else None
        if field is None or sealed is None:
            return  # nothing sealed by it is still stored (purged, or a subject of no entry)
        category, event_id, blob = sealed
        try:
            data = strict_loads(key.open(blob, payload_aad(category, event_id, key.key_id)))
        except (AuditLedgerError, ValueError):
            return  # an unreadable payload is verify's to report, not a key file problem
        if not isinstance(data, dict) or field not in data:
            return
        if self.indexer.index(SUBJECT_REF, data[field]) != scope_value:
            raise ConfigError(
                f"index.key does not reproduce the blind index of data key {key.key_id}'s "
                "subject: is index.key from another installation or backup?"
            )

    def status(self) -> str:
        """``"ok"``, ``"unknown"`` (database unreachable) or the problem, for ``/readyz``
        (public: a fixed phrase, no ids)."""
        now = self.clock()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
        try:
            self.run()
            result = OK
        except DatabaseUnavailableError:
            result = "unknown"
        except ConfigError:
            result = "the key files do not unwrap the stored data keys"
        with self._lock:
            self._cached = (now, result)
        return result
