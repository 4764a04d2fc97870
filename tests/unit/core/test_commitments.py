"""The header commitments the owner's database functions recompute (``core.commitments``).

Their exact bytes are checked against PostgreSQL by the integration tests (the functions accept
what these produce and refuse anything else); here: what each commits to, and what it does not
depend on."""

from __future__ import annotations

import hashlib

from audit_ledger.core.commitments import (
    hold_release_commitment,
    principal_commitment,
    purge_commitment,
    retired_commitment,
)

HASH = hashlib.sha256(b"alt_token").digest()


def test_principal_commitment_is_the_documented_bytes() -> None:
    expected = hashlib.sha256(
        f"audit-ledger/principal/v1\nbot\nadmin,writer\n{HASH.hex()}\n".encode()
    ).hexdigest()
    assert principal_commitment("bot", ["writer", "admin"], HASH) == expected


def test_principal_commitment_binds_name_roles_and_token() -> None:
    base = principal_commitment("bot", ["writer"], HASH)
    assert principal_commitment("bot2", ["writer"], HASH) != base
    assert principal_commitment("bot", ["writer", "admin"], HASH) != base
    assert principal_commitment("bot", ["writer"], hashlib.sha256(b"other").digest()) != base
    assert retired_commitment(HASH) != base  # domain-separated


def test_purge_commitment_is_over_the_set_and_the_reason() -> None:
    one = purge_commitment("retention", [3, 1, 2, 2], ["k2", "k1"])
    assert one == purge_commitment("retention", [1, 2, 3], ["k1", "k2"])
    assert one != purge_commitment("erasure", [1, 2, 3], ["k1", "k2"])
    assert one != purge_commitment("retention", [1, 2], ["k1", "k2"])
    assert one != purge_commitment("retention", [1, 2, 3], ["k1"])
    # Numeric, not textual, order of seqs (PostgreSQL sorts bigints numerically).
    expected = hashlib.sha256(b"audit-ledger/purge/v1\nretention\n9,10\n\n").hexdigest()
    assert purge_commitment("retention", [10, 9], []) == expected


def test_hold_release_commitment() -> None:
    assert hold_release_commitment("hold_a") != hold_release_commitment("hold_b")
