"""The auditor's side: check a ledger over HTTP against its signed checkpoints, keep a local
mirror of the verified leaves, and re-check that mirror offline (``audit-ledger audit``)."""
