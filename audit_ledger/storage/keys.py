"""Data keys as stored (``data_keys``): wrapped key material, never plaintext; use counts, the
KEK that wraps each, and destruction (the wrapped key set to NULL, never a deleted row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    insert,
    select,
    update,
)

from audit_ledger.storage.database import (
    Database,
    Transaction,
    chunks,
    raw_exec,
    raw_rows,
)
from audit_ledger.storage.schema import (
    data_keys,
    entries,
    payloads,
)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A data key row (wrapped key material, never plaintext)."""

    key_id: str
    category: str
    scope_kind: str
    scope_value: str
    kek_id: str
    wrapped: bytes | None
    uses: int
    created_at: str
    destroyed_at: str | None = None
    destroyed_by_seq: int | None = None


def _key(row: Any) -> StoredKey:
    return StoredKey(
        key_id=row.key_id,
        category=row.category,
        scope_kind=row.scope_kind,
        scope_value=row.scope_value,
        kek_id=row.kek_id,
        # Any other type than bytes is left for verification to report (SQLite stores any).
        wrapped=bytes(row.wrapped) if isinstance(row.wrapped, memoryview) else row.wrapped,
        uses=row.uses,
        created_at=row.created_at,
        destroyed_at=row.destroyed_at,
        destroyed_by_seq=row.destroyed_by_seq,
    )


def keys_by_id_on(conn: Connection, key_ids: Sequence[str]) -> dict[str, StoredKey]:
    out: dict[str, StoredKey] = {}
    for part in chunks(sorted(set(key_ids))):
        for r in conn.execute(select(data_keys).where(data_keys.c.key_id.in_(part))):
            out[r.key_id] = _key(r)
    return out


class KeyReads(Database):
    """Data-key reads in their own transactions."""

    def keys_by_id(self, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        with self.reader() as conn:
            return keys_by_id_on(conn, key_ids)

    def iter_keys(self) -> Iterator[StoredKey]:
        with self.reader() as conn:
            for r in conn.execute(select(data_keys).order_by(data_keys.c.key_id)):
                yield _key(r)

    def kek_ids_in_use(self) -> set[str]:
        """KEKs that still wrap an undestroyed data key."""
        with self.reader() as conn:
            rows = conn.execute(
                select(data_keys.c.kek_id).where(data_keys.c.wrapped.is_not(None)).distinct()
            )
            return {str(r[0]) for r in rows}

    def live_key_samples(self) -> list[StoredKey]:
        """One undestroyed key per (KEK, scope kind): what start-up unwraps to prove the KEK
        (and the subject key store) are the ones these rows were wrapped with."""
        sample = (
            select(func.max(data_keys.c.key_id))
            .where(data_keys.c.wrapped.is_not(None))
            .group_by(data_keys.c.kek_id, data_keys.c.scope_kind)
        )
        with self.reader() as conn:
            rows = conn.execute(
                select(data_keys).where(data_keys.c.key_id.in_(sample)).order_by("key_id")
            )
            return [_key(r) for r in rows]

    def one_sealed_by(self, key_id: str) -> tuple[str, str, bytes] | None:
        """``(category, event_id, payload)`` of one entry sealed by ``key_id`` whose payload is
        still stored, or None."""
        query = (
            select(entries.c.category, entries.c.event_id, payloads.c.blob)
            .join(payloads, payloads.c.seq == entries.c.seq)
            .where(entries.c.key_id == key_id)
            .limit(1)
        )
        with self.reader() as conn:
            row = conn.execute(query).first()
        return None if row is None else (str(row[0]), str(row[1]), bytes(row[2]))


class KeyWrites(Transaction):
    """Data-key reads and changes under the head lock."""

    def keys_by_id(self, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        return keys_by_id_on(self.conn, key_ids)

    def usable_keys(
        self, category: str, scope_kind: str, scope_values: Sequence[str]
    ) -> list[StoredKey]:
        """Undestroyed keys of the given scopes, newest first (the caller checks use counts)."""
        columns = "key_id, category, scope_kind, scope_value, kek_id, wrapped, uses, created_at"
        if self.dialect == "postgresql":
            # One array parameter: the same statement text for any number of scopes, so it is
            # prepared once per connection (a batch names hundreds of data subjects).
            query = f"SELECT {columns} FROM data_keys WHERE category = ? AND scope_kind = ?"  # noqa: S608 - fixed text
            params: list[Any] = [category, scope_kind, list(scope_values)]
            query += " AND scope_value = ANY(?::text[])"
        else:
            marks = ", ".join("?" for _ in scope_values)
            query = f"SELECT {columns} FROM data_keys WHERE category = ? AND scope_kind = ?"  # noqa: S608 - placeholders only
            query += f" AND scope_value IN ({marks})"
            params = [category, scope_kind, *scope_values]
        rows = raw_rows(
            self.conn,
            query + " AND wrapped IS NOT NULL ORDER BY created_at DESC, key_id",
            params,
        )
        return [
            StoredKey(key_id, cat, kind, value, kek_id, bytes(wrapped), uses, created_at)
            for key_id, cat, kind, value, kek_id, wrapped, uses, created_at in rows
        ]

    def insert_key(self, key: StoredKey) -> None:
        self.conn.execute(
            insert(data_keys).values(
                key_id=key.key_id,
                category=key.category,
                scope_kind=key.scope_kind,
                scope_value=key.scope_value,
                kek_id=key.kek_id,
                wrapped=key.wrapped,
                uses=key.uses,
                created_at=key.created_at,
            )
        )

    def add_key_uses(self, uses: Mapping[str, int]) -> None:
        if self.dialect == "postgresql" and uses:
            # One statement for every key of the batch (one per data subject otherwise).
            raw_exec(
                self.conn,
                "UPDATE data_keys d SET uses = d.uses + u.n"
                " FROM unnest(?::text[], ?::int8[]) AS u(key_id, n) WHERE d.key_id = u.key_id",
                (list(uses), list(uses.values())),
            )
            return
        for key_id, count in uses.items():
            raw_exec(
                self.conn, "UPDATE data_keys SET uses = uses + ? WHERE key_id = ?", (count, key_id)
            )

    def keys_of(
        self, *, category: str, scope_kind: str, scope_value: str | None = None
    ) -> list[StoredKey]:
        """Undestroyed keys of a category's scope kind (optionally one scope value)."""
        stmt = select(data_keys).where(
            data_keys.c.category == category,
            data_keys.c.scope_kind == scope_kind,
            data_keys.c.wrapped.is_not(None),
        )
        if scope_value is not None:
            stmt = stmt.where(data_keys.c.scope_value == scope_value)
        return [_key(r) for r in self.conn.execute(stmt.order_by(data_keys.c.key_id))]

    def destroy_keys(self, key_ids: Sequence[str], when: str, op_seq: int) -> None:
        for part in chunks(sorted(set(key_ids))):
            self.conn.execute(
                update(data_keys)
                .where(data_keys.c.key_id.in_(part), data_keys.c.wrapped.is_not(None))
                .values(wrapped=None, destroyed_at=when, destroyed_by_seq=op_seq)
            )

    def lock_keys_to_rewrap(self, kek_id: str, after: str, limit: int) -> list[StoredKey]:
        """Up to ``limit`` undestroyed keys past ``after`` (by id) that are wrapped by another
        KEK than ``kek_id``, locked until commit: an erasure or retention destroying one waits
        for the re-wrap (and then destroys the re-wrapped key), never the other way round."""
        stmt = (
            select(data_keys)
            .where(
                data_keys.c.key_id > after,
                data_keys.c.kek_id != kek_id,
                data_keys.c.wrapped.is_not(None),
            )
            .order_by(data_keys.c.key_id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update()  # SQLite: the writer's BEGIN IMMEDIATE locks it all
        return [_key(r) for r in self.conn.execute(stmt)]

    def set_key_wrap(self, key_id: str, kek_id: str, wrapped: bytes) -> None:
        """Store a key re-wrapped by another KEK (the row is locked by the caller)."""
        self.conn.execute(
            update(data_keys)
            .where(data_keys.c.key_id == key_id, data_keys.c.wrapped.is_not(None))
            .values(kek_id=kek_id, wrapped=wrapped)
        )
