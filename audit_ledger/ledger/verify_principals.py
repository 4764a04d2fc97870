"""``verify``'s check of every principal row against the chain (issue #12).

Run after the entries are verified (so the binding entries themselves are known good): every
active principal must match the entry at its ``bound_seq`` (``principal_binding``) and no entry
may have retired its token hash. This names forged rows (no binding, or one that commits to
other content), changed rows (roles or token edited) and un-revoked rows (an active row whose
token a ``principal_revoked`` or ``principal_rotated`` entry retired). On PostgreSQL the owner's
functions prevent these; on SQLite (no roles) this is how they are found.
"""

from __future__ import annotations

from typing import Protocol

from audit_ledger.core.commitments import RETIRED_REF, retired_commitment
from audit_ledger.ledger.principal_binding import UNBOUND, binding_problem
from audit_ledger.ledger.verify_entries import fail
from audit_ledger.storage.entries import StoredEntry
from audit_ledger.storage.principals import StoredPrincipal


class PrincipalEvidenceStore(Protocol):
    def principals(self) -> list[StoredPrincipal]: ...

    def entry(self, seq: int) -> StoredEntry | None: ...

    def seqs_with_ref(self, name: str, value: str) -> list[int]: ...


def check_principals(store: PrincipalEvidenceStore, size: int) -> int:
    """Raise the first principal problem found; the number of rows checked. Revoked rows are
    not checked further: they authenticate nothing whatever they say."""
    rows = store.principals()
    for row in rows:
        if row.revoked_at is not None:
            continue
        entry = None
        if row.bound_seq is not None and 0 <= row.bound_seq < size:
            entry = store.entry(row.bound_seq)
        binding = (entry.category, entry.event_type, entry.leaf) if entry is not None else None
        problem = binding_problem(row, binding)
        if problem == UNBOUND:
            raise fail(
                f"principal {row.name!r} is not bound to the chain: a forged row, or one "
                "from before the upgrade (run 'audit-ledger principals attest')"
            )
        if problem is not None:
            raise fail(
                f"principal {row.name!r} differs from the entry that binds it "
                "(a forged or changed row: name, roles or token)",
                seq=row.bound_seq,
            )
        retired = store.seqs_with_ref(RETIRED_REF, retired_commitment(row.token_hash))
        if retired:
            raise fail(
                f"principal {row.name!r} is active but its token was revoked or replaced "
                f"by entry {retired[0]} (an un-revoked row)",
                seq=retired[0],
            )
    return len(rows)
