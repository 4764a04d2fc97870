"""Use cases: append, read, prove, checkpoint and verify — the rules of the ledger, over storage."""
