"""The auditor's side: check a ledger over HTTP against its signed checkpoints, keep a local
mirror of the verified leaves, and re-check that mirror offline (``audit-ledger audit``)."""

#: Inclusion proofs checked per run by default (the last new leaf and a random sample).
#: (Here, not in :mod:`.monitor`: the command line shows it in ``--help`` without importing the
#: auditor's machinery.)
DEFAULT_INCLUSION_CHECKS = 8
