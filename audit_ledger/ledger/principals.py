"""Principals: adding, revoking, listing and authenticating bearer-token holders.

Tokens are 256-bit random strings shown once at creation; only their SHA-256 is stored, so a
database dump reveals no usable token (the token's entropy makes a salt/KDF unnecessary). Every
change to a principal is itself a ``ledger_operations`` entry, committed in the same transaction,
whose header commits to the row (``core.commitments``): the row is *bound* to that entry. A token
authenticates only while its row matches its binding entry and no entry retired it
(``principal_binding``), so a row forged or edited in the database is refused, and ``rotate``
replaces a token without renaming its principal (the writer name in later headers stays).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol

from audit_ledger.core.commitments import (
    PRINCIPAL_REF,
    RETIRED_REF,
    principal_commitment,
    retired_commitment,
)
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
from audit_ledger.ledger.principal_binding import binding_problem
from audit_ledger.storage.principals import PrincipalEvidence, StoredPrincipal
from audit_ledger.storage.store import WriteTx

#: How long a successful token look-up is reused (revocation takes effect within this).
AUTH_CACHE_SECONDS = 2.0


class PrincipalStore(Protocol):
    """What principal management needs of storage."""

    def writer(self) -> AbstractContextManager[WriteTx]: ...

    def principal_by_token_hash(self, token_hash: bytes) -> StoredPrincipal | None: ...

    def principal_evidence(
        self, token_hash: bytes, retired_ref: str
    ) -> PrincipalEvidence | None: ...

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
        digest = token_hash(token)
        now = format_timestamp(self.operations.clock())
        op = self.operations.event(
            "principal_added",
            {"principal": name, "roles": list(chosen), "actor": actor},
            {PRINCIPAL_REF: principal_commitment(name, chosen, digest)},
        )
        with self.store.writer() as tx:
            tx.head()  # the head lock first, as for every write (DESIGN §5)
            if tx.principal_named(name) is not None:
                raise ConflictError(f"principal {name!r} already exists")
            seq = self.operations.record_in(tx, op)
            tx.insert_principal(StoredPrincipal(name, digest, chosen, now, None), seq)
        return token

    def rotate(self, name: str, *, actor: str = "cli") -> str:
        """Replace an active principal's token; return the new one. The old token stops working
        at once (the entry retires its hash); the name, roles and writer name stay."""
        check_name(name)
        token = new_token()
        digest = token_hash(token)
        with self.store.writer() as tx:
            tx.head()
            old = tx.principal_named(name)
            if old is None or old.revoked_at is not None:
                raise NotFoundError(f"no active principal named {name!r}")
            op = self.operations.event(
                "principal_rotated",
                {"principal": name, "roles": list(old.roles), "actor": actor},
                {
                    PRINCIPAL_REF: principal_commitment(name, old.roles, digest),
                    RETIRED_REF: retired_commitment(old.token_hash),
                },
            )
            seq = self.operations.record_in(tx, op)
            new = StoredPrincipal(name, digest, old.roles, old.created_at, None)
            if not tx.rebind_principal(new, seq):
                raise NotFoundError(f"no active principal named {name!r}")
        self._auth_cache.clear()
        return token

    def attest(self, *, actor: str = "cli") -> list[str]:
        """Bind every active principal created before migration 0004 (no binding entry yet) to
        a ``principal_attested`` entry, keeping its token; the names attested. Run once, by the
        owner, after the upgrade: until then such tokens are refused."""
        attested: list[str] = []
        with self.store.writer() as tx:
            tx.head()
            for row in tx.all_principals():
                if row.bound_seq is not None or row.revoked_at is not None:
                    continue
                op = self.operations.event(
                    "principal_attested",
                    {"principal": row.name, "roles": list(row.roles), "actor": actor},
                    {PRINCIPAL_REF: principal_commitment(row.name, row.roles, row.token_hash)},
                )
                seq = self.operations.record_in(tx, op)
                tx.rebind_principal(row, seq)
                attested.append(row.name)
        self._auth_cache.clear()
        return attested

    def revoke(self, name: str, *, actor: str = "cli") -> None:
        check_name(name)
        with self.store.writer() as tx:
            tx.head()
            row = tx.principal_named(name)
            if row is None or row.revoked_at is not None:
                raise NotFoundError(f"no active principal named {name!r}")
            op = self.operations.event(
                "principal_revoked",
                {"principal": name, "actor": actor},
                {RETIRED_REF: retired_commitment(row.token_hash)},
            )
            seq = self.operations.record_in(tx, op)
            if not tx.revoke_principal(name, format_timestamp(self.operations.clock()), seq):
                raise NotFoundError(f"no active principal named {name!r}")
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

    def by_token_hash(self, digest: bytes) -> Principal:
        """The principal whose token has SHA-256 ``digest``, checked against the chain like a
        token (``unknown``, ``revoked``, ``unbound``, ``tampered``); never cached (a console
        session re-checks its principal on every request, on whichever worker)."""
        evidence = self.store.principal_evidence(digest, retired_commitment(digest))
        if evidence is None:
            raise AuthenticationError("unknown")
        stored = evidence.principal
        if stored.revoked_at is not None or evidence.retired:
            raise AuthenticationError("revoked")
        problem = binding_problem(stored, evidence.binding)
        if problem is not None:
            raise AuthenticationError(problem)
        return Principal(stored.name, frozenset(stored.roles))

    def authenticate(self, token: str) -> Principal:
        """The principal holding ``token``; :class:`AuthenticationError` with a reason code.

        Successful look-ups are cached for :data:`AUTH_CACHE_SECONDS` (by token hash), which
        saves a database round trip per request; a revocation therefore takes effect within
        that many seconds. Failures are never cached. A miss costs one query, which also
        reads the row's binding entry and whether an entry retired the token: a row that does
        not match the chain is refused (``unbound``, ``tampered``, ``revoked``).
        """
        if not token_shape_ok(token):
            raise AuthenticationError("malformed")
        digest = token_hash(token)
        now = time.monotonic()
        cached = self._auth_cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = self.by_token_hash(digest)
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[digest] = (principal, now + AUTH_CACHE_SECONDS)
        return principal
