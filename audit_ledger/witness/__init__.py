"""A built-in C2SP tlog-witness v1 (``audit-ledger witness serve``, DESIGN §7, issue #13).

An auditing firm runs it outside the company that runs the ledger. It trusts only the logs it
is configured with (origin + Ed25519 verifier key), keeps the latest checkpoint it cosigned per
origin in its own SQLite file, and signs tlog-cosignature v1 (Ed25519) cosignatures with its own
key from its own keys directory. It shares no database, key or code path with the ledger beyond
the pure ``core`` formats: a ledger operator holding both the database and the checkpoint key
still cannot make the witness cosign two histories.

* :mod:`~audit_ledger.witness.keys`: the witness's key file;
* :mod:`~audit_ledger.witness.state`: its SQLite state (trusted logs, latest cosigned checkpoint);
* :mod:`~audit_ledger.witness.witness`: the ``add-checkpoint`` state machine;
* :mod:`~audit_ledger.witness.app`: the HTTP shell (Starlette).

The ``audit-ledger witness`` commands are in :mod:`audit_ledger.cli.witness`.
"""
