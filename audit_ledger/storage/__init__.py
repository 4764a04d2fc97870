"""Persistence below the use cases: SQLAlchemy Core tables, engines for PostgreSQL and SQLite,
and the repository that the ``ledger`` layer drives. No ledger rules live here."""
