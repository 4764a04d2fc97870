"""Commitments that bind privileged database changes to the ledger entry authorising them.

A change to a principal, a payload purge with its key destructions, and the release of a legal
hold are each authorised by a ``ledger_operations`` entry appended in the same transaction. The
entry's data is sealed (AES-256-GCM), so the database cannot read it; the header's ``refs``
(DESIGN §3: an object of string to string, always present) carries a SHA-256 commitment to the
exact change instead. The owner role's ``SECURITY DEFINER`` functions (migration 0004) recompute
the same bytes with PostgreSQL's ``sha256()`` and refuse a change its entry does not commit to;
``verify`` and the authentication path recompute them here.

The byte strings are line-oriented text with a versioned domain prefix, so PostgreSQL can build
them with ``||`` and no JSON canonicalisation: every field is a principal name (no newline, see
``ledger.identity``), a role list joined by ``,``, lower-case hex, a decimal seq or a key/hold id.

Safe to publish: every principal commitment includes the SHA-256 of a 256-bit random token, which
nobody without the database can guess, so a header does not even confirm a guessed name; and
the token hash itself is useless as a credential (the service hashes what it is presented).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

#: Header ref of a principal's binding (added, rotated or attested): name, roles, token hash.
PRINCIPAL_REF = "principal"
#: Header ref naming a token that stops working (revocation, or the old token of a rotation).
RETIRED_REF = "principal_retired"
#: Header ref of a retention run's or erasure's purges and key destructions.
PURGE_REF = "purge"
#: Header ref of a legal hold's release.
HOLD_RELEASE_REF = "hold_release"


def _digest(*lines: str) -> str:
    return hashlib.sha256("".join(line + "\n" for line in lines).encode("utf-8")).hexdigest()


def principal_commitment(name: str, roles: Iterable[str], token_hash: bytes) -> str:
    """Binds a principal row: its name, its (sorted) roles and its token hash."""
    return _digest("audit-ledger/principal/v1", name, ",".join(sorted(roles)), token_hash.hex())


def retired_commitment(token_hash: bytes) -> str:
    """Names a token that no longer authenticates (token hashes are unique, so no name is
    needed, and the authentication path can compute it before it reads the row)."""
    return _digest("audit-ledger/principal-retired/v1", token_hash.hex())


def purge_commitment(reason: str, seqs: Iterable[int], key_ids: Iterable[str]) -> str:
    """Binds every payload seq purged and every data key destroyed by one operation."""
    return _digest(
        "audit-ledger/purge/v1",
        reason,
        ",".join(str(s) for s in sorted(set(seqs))),
        ",".join(sorted(set(key_ids))),
    )


def hold_release_commitment(hold_id: str) -> str:
    """Binds the release of one legal hold."""
    return _digest("audit-ledger/hold-release/v1", hold_id)
