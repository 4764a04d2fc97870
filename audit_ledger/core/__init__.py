"""Pure core of the ledger: canonical bytes, hashes, Merkle proofs, checkpoints, verification.

No I/O lives here. Storage is passed in as functions (a "hash reader"), as in Go's sumdb/tlog and
transparency-dev/tessera, so the same code serves PostgreSQL, SQLite and in-memory tests.
"""
