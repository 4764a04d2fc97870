"""Proof bundles for one entry (``GET /v1/log/proof/bundle``, ``audit-ledger prove``; DESIGN §7).

A bundle is a C2SP ``c2sp.org/tlog-proof@v1`` text: the entry's leaf bytes (in ``extra``), its
index, the inclusion proof into the latest checkpoint and that checkpoint verbatim, taken from
:meth:`~audit_ledger.ledger.log.Log.cosigned_note` — the same note ``/v1/log/checkpoint``
serves, so every witness cosignature the ledger holds travels with the bundle. Handing out a
leaf is a read of that entry's header, recorded like ``/v1/log/leaves``.
"""

from __future__ import annotations

from audit_ledger.core.bundle import encode_bundle
from audit_ledger.errors import NotFoundError
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.log import Log
from audit_ledger.ledger.operations import bad


def proof_bundle(log: Log, principal: Principal, seq: int, endpoint: str) -> str:
    """The tlog-proof bundle of entry ``seq`` against the latest checkpoint, recorded as a read.

    Raises :class:`NotFoundError` before the first checkpoint, and a validation error for a
    ``seq`` the latest checkpoint does not cover (yet).
    """
    latest = log.latest_checkpoint()
    if latest is None:
        raise NotFoundError("no checkpoint yet (the log is empty or none was made)")
    if not 0 <= seq < latest.tree_size:
        raise bad(
            "seq",
            f"need 0 <= seq < {latest.tree_size}, the size of the latest checkpoint "
            "(a newer entry is provable once a checkpoint covers it)",
        )
    [(_, leaf)] = log.leaves(seq, seq + 1)
    proof = log.inclusion_proof(seq, latest.tree_size)
    bundle = encode_bundle(seq, proof, log.cosigned_note(latest), leaf)
    log.reads.record(principal, endpoint, [seq])
    return bundle
