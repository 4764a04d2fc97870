"""API principals as stored (``principals``): name, roles and the SHA-256 of the bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    insert,
    select,
    update,
)

from audit_ledger.storage.database import (
    Database,
    Transaction,
)
from audit_ledger.storage.schema import (
    principals,
)


@dataclass(frozen=True, slots=True)
class StoredPrincipal:
    name: str
    token_hash: bytes
    roles: tuple[str, ...]
    created_at: str
    revoked_at: str | None


def _principal(row: Any) -> StoredPrincipal:
    return StoredPrincipal(
        row.name, bytes(row.token_hash), tuple(row.roles.split(",")), row.created_at, row.revoked_at
    )


class PrincipalReads(Database):
    """Principal look-ups."""

    def principal_by_token_hash(self, token_hash: bytes) -> StoredPrincipal | None:
        with self.reader() as conn:
            row = conn.execute(
                select(principals).where(principals.c.token_hash == token_hash)
            ).one_or_none()
            return _principal(row) if row is not None else None

    def principals(self) -> list[StoredPrincipal]:
        with self.reader() as conn:
            rows = conn.execute(select(principals).order_by(principals.c.name))
            return [_principal(r) for r in rows]


class PrincipalWrites(Transaction):
    """Principal changes under the head lock (recorded with them)."""

    def insert_principal(self, principal: StoredPrincipal) -> bool:
        """Insert a principal; False if the name is taken."""
        taken = self.conn.execute(
            select(principals.c.name).where(principals.c.name == principal.name)
        ).first()
        if taken is not None:
            return False
        self.conn.execute(
            insert(principals).values(
                name=principal.name,
                token_hash=principal.token_hash,
                roles=",".join(principal.roles),
                created_at=principal.created_at,
            )
        )
        return True

    def revoke_principal(self, name: str, when: str) -> bool:
        """Mark a principal revoked; False if unknown or already revoked."""
        result = self.conn.execute(
            update(principals)
            .where(principals.c.name == name, principals.c.revoked_at.is_(None))
            .values(revoked_at=when)
        )
        return bool(result.rowcount)
