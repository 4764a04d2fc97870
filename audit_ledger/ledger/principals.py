"""Principals: adding, revoking, listing and authenticating bearer-token holders.

Tokens are 256-bit random strings shown once at creation; only their SHA-256 is stored, so a
database dump reveals no usable token (the token's entropy makes a salt/KDF unnecessary). Every
change to a principal is itself a ``ledger_operations`` entry, committed in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.errors import AuthenticationError, ConflictError, NotFoundError
from audit_ledger.ledger.identity import (
    Principal,
    check_name,
    check_roles,
    new_token,
    token_hash,
    token_shape_ok,
)
from audit_ledger.ledger.operations import Operations
from audit_ledger.storage.principals import StoredPrincipal
from audit_ledger.storage.store import WriteTx

#: How long a successful token look-up is reused (revocation takes effect within this).
AUTH_CACHE_SECONDS = 2.0


class PrincipalStore(Protocol):
    """What principal management needs of storage."""

    def writer(self) -> AbstractContextManager[WriteTx]: ...

    def principal_by_token_hash(self, token_hash: bytes) -> StoredPrincipal | None: ...

    def principals(self) -> list[StoredPrincipal]: ...


class Principals:
    """Adding, revoking, listing and authenticating principals; every change is recorded in
    the same transaction as an operation."""

    def __init__(self, store: PrincipalStore, operations: Operations) -> None:
        self.store = store
        self.operations = operations
        self._auth_cache: dict[bytes, tuple[Principal, float]] = {}

    def add(self, name: str, roles: Iterable[str], *, actor: str = "cli") -> str:
        """Create a principal; return its bearer token (shown once, stored only hashed)."""
        check_name(name)
        chosen = check_roles(roles)
        token = new_token()
        now = format_timestamp(self.operations.clock())
        op = self.operations.event(
            "principal_added", {"principal": name, "roles": list(chosen), "actor": actor}
        )
        with self.store.writer() as tx:
            tx.head()  # the head lock first, as for every write (DESIGN §5)
            stored = StoredPrincipal(name, token_hash(token), chosen, now, None)
            if not tx.insert_principal(stored):
                raise ConflictError(f"principal {name!r} already exists")
            self.operations.record_in(tx, op)
        return token

    def revoke(self, name: str, *, actor: str = "cli") -> None:
        check_name(name)
        op = self.operations.event("principal_revoked", {"principal": name, "actor": actor})
        with self.store.writer() as tx:
            tx.head()
            if not tx.revoke_principal(name, format_timestamp(self.operations.clock())):
                raise NotFoundError(f"no active principal named {name!r}")
            self.operations.record_in(tx, op)
        self._auth_cache.clear()

    def all(self) -> list[StoredPrincipal]:
        return self.store.principals()

    def cached(self, token: str) -> Principal | None:
        """The principal holding ``token`` if a recent look-up is cached (no I/O, so the
        service can answer from its event loop); None when :meth:`authenticate` must ask the
        database. A malformed token raises :class:`AuthenticationError` right away."""
        if not token_shape_ok(token):
            raise AuthenticationError("malformed")
        cached = self._auth_cache.get(token_hash(token))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def authenticate(self, token: str) -> Principal:
        """The principal holding ``token``; :class:`AuthenticationError` with a reason code.

        Successful look-ups are cached for :data:`AUTH_CACHE_SECONDS` (by token hash), which
        saves a database round trip per request; a revocation therefore takes effect within
        that many seconds. Failures are never cached.
        """
        if not token_shape_ok(token):
            raise AuthenticationError("malformed")
        digest = token_hash(token)
        now = time.monotonic()
        cached = self._auth_cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = self.store.principal_by_token_hash(digest)
        if stored is None:
            raise AuthenticationError("unknown")
        if stored.revoked_at is not None:
            raise AuthenticationError("revoked")
        principal = Principal(stored.name, frozenset(stored.roles))
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[digest] = (principal, now + AUTH_CACHE_SECONDS)
        return principal
