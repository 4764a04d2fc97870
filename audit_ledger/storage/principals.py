"""API principals as stored (``principals``): name, roles, the SHA-256 of the bearer token, and
the ``ledger_operations`` entries the row is bound to (migration 0004).

On PostgreSQL every change goes through the owner role's ``SECURITY DEFINER`` functions, which
check the authorising entry's commitment (``core.commitments``); the serving role has no INSERT,
UPDATE or DELETE on the table. On SQLite the same statements run directly and the 0004 triggers
check what SQLite can (the entry exists and is of the right kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    exists,
    insert,
    select,
    text,
    update,
)

from audit_ledger.storage.database import (
    Database,
    Transaction,
)
from audit_ledger.storage.schema import (
    entries,
    entry_refs,
    principals,
)


@dataclass(frozen=True, slots=True)
class StoredPrincipal:
    name: str
    token_hash: bytes
    roles: tuple[str, ...]
    created_at: str
    revoked_at: str | None
    bound_seq: int | None = None
    revoked_seq: int | None = None


@dataclass(frozen=True, slots=True)
class PrincipalEvidence:
    """A principal row with what the chain says about it, read in one query."""

    principal: StoredPrincipal
    #: Category, event type and leaf bytes of the entry at ``bound_seq`` (None if absent).
    binding: tuple[str, str, bytes] | None
    #: Whether an entry retires this row's token hash (ref ``principal_retired``).
    retired: bool


def _principal(row: Any) -> StoredPrincipal:
    return StoredPrincipal(
        row.name,
        bytes(row.token_hash),
        tuple(row.roles.split(",")),
        row.created_at,
        row.revoked_at,
        row.bound_seq,
        row.revoked_seq,
    )


#: Built once: the auth path runs it on every cache miss (SQLAlchemy then reuses its compiled
#: form). Both look-ups are index probes: ``principals.token_hash`` (unique), ``entries.seq``
#: (primary key) and the blind-index look-up of ``entry_refs`` (a hash index on its value on
#: PostgreSQL, ``(name, value, seq)`` on SQLite).
_EVIDENCE = (
    select(
        principals,
        entries.c.category,
        entries.c.event_type,
        entries.c.leaf,
        exists()
        .where(
            entry_refs.c.name == "principal_retired",
            entry_refs.c.value == bindparam("retired_ref"),
        )
        .label("retired"),
    )
    .select_from(principals)
    .outerjoin(entries, entries.c.seq == principals.c.bound_seq)
    .where(principals.c.token_hash == bindparam("token_hash"))
)


class PrincipalReads(Database):
    """Principal look-ups."""

    def principal_by_token_hash(self, token_hash: bytes) -> StoredPrincipal | None:
        with self.reader() as conn:
            row = conn.execute(
                select(principals).where(principals.c.token_hash == token_hash)
            ).one_or_none()
            return _principal(row) if row is not None else None

    def principal_evidence(self, token_hash: bytes, retired_ref: str) -> PrincipalEvidence | None:
        """The principal holding ``token_hash``, its binding entry and whether an entry with
        ref ``principal_retired`` = ``retired_ref`` exists — one round trip (the auth path)."""
        with self.reader() as conn:
            row = conn.execute(
                _EVIDENCE, {"token_hash": token_hash, "retired_ref": retired_ref}
            ).one_or_none()
        if row is None:
            return None
        binding = None
        if row.leaf is not None:
            binding = (row.category, row.event_type, bytes(row.leaf))
        return PrincipalEvidence(_principal(row), binding, bool(row.retired))

    def principals(self) -> list[StoredPrincipal]:
        with self.reader() as conn:
            rows = conn.execute(select(principals).order_by(principals.c.name))
            return [_principal(r) for r in rows]

    def seqs_with_ref(self, name: str, value: str) -> list[int]:
        """Seqs of the entries whose header has ref ``name`` = ``value``."""
        with self.reader() as conn:
            rows = conn.execute(
                select(entry_refs.c.seq)
                .where(and_(entry_refs.c.name == name, entry_refs.c.value == value))
                .order_by(entry_refs.c.seq)
            )
            return [int(r[0]) for r in rows]


class PrincipalWrites(Transaction):
    """Principal changes under the head lock, each bound to the entry recorded with it."""

    def principal_named(self, name: str) -> StoredPrincipal | None:
        row = self.conn.execute(select(principals).where(principals.c.name == name)).one_or_none()
        return _principal(row) if row is not None else None

    def all_principals(self) -> list[StoredPrincipal]:
        rows = self.conn.execute(select(principals).order_by(principals.c.name))
        return [_principal(r) for r in rows]

    def insert_principal(self, principal: StoredPrincipal, op_seq: int) -> None:
        """Insert a principal bound to entry ``op_seq`` (the caller checked the name is free)."""
        if self.dialect == "postgresql":
            self._call_bind(principal, op_seq)
            return
        self.conn.execute(
            insert(principals).values(
                name=principal.name,
                token_hash=principal.token_hash,
                roles=",".join(principal.roles),
                created_at=principal.created_at,
                bound_seq=op_seq,
            )
        )

    def rebind_principal(self, principal: StoredPrincipal, op_seq: int) -> bool:
        """Bind an existing, active principal to entry ``op_seq`` with ``principal``'s token
        hash (a rotation, or the attestation of a row from before 0004)."""
        if self.dialect == "postgresql":
            self._call_bind(principal, op_seq)
            return True
        result = self.conn.execute(
            update(principals)
            .where(principals.c.name == principal.name, principals.c.revoked_at.is_(None))
            .values(token_hash=principal.token_hash, bound_seq=op_seq)
        )
        return bool(result.rowcount)

    def _call_bind(self, principal: StoredPrincipal, op_seq: int) -> None:
        self.conn.execute(
            text("SELECT audit_ledger_bind_principal(:op, :name, :roles, :hash, :when)"),
            {
                "op": op_seq,
                "name": principal.name,
                "roles": ",".join(principal.roles),
                "hash": principal.token_hash,
                "when": principal.created_at,
            },
        )

    def revoke_principal(self, name: str, when: str, op_seq: int) -> bool:
        """Mark a principal revoked by entry ``op_seq``; False if unknown or already revoked."""
        if self.dialect == "postgresql":
            return bool(
                self.conn.execute(
                    text("SELECT audit_ledger_revoke_principal(:op, :name, :when)"),
                    {"op": op_seq, "name": name, "when": when},
                ).scalar_one()
            )
        result = self.conn.execute(
            update(principals)
            .where(principals.c.name == name, principals.c.revoked_at.is_(None))
            .values(revoked_at=when, revoked_seq=op_seq)
        )
        return bool(result.rowcount)
