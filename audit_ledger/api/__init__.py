"""The HTTP service (FastAPI): a thin shell over :class:`~audit_ledger.ledger.service.Ledger`."""
