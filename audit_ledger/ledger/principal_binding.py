"""Whether a stored principal matches the chain (issue #12: principals bound to the chain).

A principal row is valid only if the ``ledger_operations`` entry at its ``bound_seq`` is a
``principal_added``, ``principal_rotated`` or ``principal_attested`` entry whose header ref
``principal`` commits to the row's name, roles and token hash, and no entry retires that token
hash (ref ``principal_retired``: a revocation, or the old token of a rotation). The same rule
serves the authentication path (one row, cached) and ``verify`` (every row). No I/O here.
"""

from __future__ import annotations

import json

from audit_ledger.core.commitments import PRINCIPAL_REF, principal_commitment
from audit_ledger.policy import LEDGER_OPERATIONS
from audit_ledger.storage.principals import StoredPrincipal

#: Entries that bind a principal row to its (name, roles, token hash).
BINDING_EVENTS = frozenset({"principal_added", "principal_rotated", "principal_attested"})

#: Reason codes (authentication failures are logged and counted by these, never shown).
UNBOUND, TAMPERED = "unbound", "tampered"


def binding_problem(
    principal: StoredPrincipal, binding: tuple[str, str, bytes] | None
) -> str | None:
    """``UNBOUND`` (no binding entry), ``TAMPERED`` (the entry does not commit to this row), or
    None when the row matches the entry at its ``bound_seq``."""
    if principal.bound_seq is None:
        return UNBOUND
    if binding is None:
        return TAMPERED
    category, event_type, leaf = binding
    if category != LEDGER_OPERATIONS or event_type not in BINDING_EVENTS:
        return TAMPERED
    try:
        # A plain JSON read, not the full canonical-form check of ``parse_leaf`` (ten times
        # dearer, and the auth path is hot): ``verify`` checks every leaf's form anyway.
        committed = json.loads(leaf)["refs"][PRINCIPAL_REF]
    except (ValueError, TypeError, KeyError):
        return TAMPERED
    expected = principal_commitment(principal.name, principal.roles, principal.token_hash)
    return None if committed == expected else TAMPERED
