"""One router per domain: events (append and read), log (leaves, proofs, checkpoints),
retention (erasure and legal holds) and health (liveness, readiness, metrics)."""
