"""Table definitions (SQLAlchemy Core). Alembic migrations create them; these describe them.

Timestamps are stored as the ledger's canonical RFC 3339 text (fixed width, UTC), which sorts
correctly as a string on both backends and never loses a microsecond to a database type.

Mutability, enforced by guard triggers (see the migrations):

* ``entries``, ``entry_refs``, ``tree_nodes``, ``checkpoints``, ``payload_purges``: insert only.
* ``payloads``: a row may be deleted only once a ``payload_purges`` row names its seq and the
  ``ledger_operations`` entry that recorded the purge; never updated.
* ``data_keys``: never deleted; an update may only count uses or destroy the wrapped key.
* ``ledger_head``: one row; its size only grows.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

#: One row (id = 1). Appenders lock it FOR UPDATE first (DESIGN §5): it serialises appends and
#: carries the tree's right edge so an append needs no reads of older hashes.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("last_leaf_hash", LargeBinary, nullable=True),
    Column("last_recorded_at", String(27), nullable=True),
    Column("frontier", LargeBinary, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("category", String(64), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("occurred_at", String(27), nullable=False),
    Column("recorded_at", String(27), nullable=False),
    Column("writer", String(128), nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("leaf_hash", LargeBinary, nullable=False),
    # The committed leaf bytes, verbatim (never re-derived from the columns above).
    Column("leaf", LargeBinary, nullable=False),
)
Index("ix_entries_category_seq", entries.c.category, entries.c.seq)
Index("ix_entries_category_occurred", entries.c.category, entries.c.occurred_at)
Index("ix_entries_key_id", entries.c.key_id)

entry_refs = Table(
    "entry_refs",
    metadata,
    # No foreign keys on the per-event tables (see migration 0001): verify finds orphans.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(32), primary_key=True),
    Column("value", String(64), nullable=False),  # blind index (hex HMAC), never plaintext
)
# Look-ups by blind index (search by user or order id, erasure, a principal's binding) are
# equalities on ``value``: a hash index on PostgreSQL (migration 0007: a quarter of the B-tree's
# bytes and far cheaper to insert into), the B-tree on SQLite, which has no hash indexes.
Index("ix_entry_refs_value", entry_refs.c.value, postgresql_using="hash").ddl_if(
    dialect="postgresql"
)
Index("ix_entry_refs_lookup", entry_refs.c.name, entry_refs.c.value, entry_refs.c.seq).ddl_if(
    dialect="sqlite"
)

#: Stored complete-subtree hashes for levels >= 1; level 0 is ``entries.leaf_hash``.
tree_nodes = Table(
    "tree_nodes",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
)

payloads = Table(
    "payloads",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("blob", LargeBinary, nullable=False),
)

#: Why a payload is gone: each purge or erasure names the ledger_operations entry recording it.
payload_purges = Table(
    "payload_purges",
    metadata,
    Column("seq", BigInteger, ForeignKey("entries.seq"), primary_key=True, autoincrement=False),
    Column("op_seq", BigInteger, ForeignKey("entries.seq"), nullable=False),
    Column("reason", String(16), nullable=False),  # "retention" | "erasure"
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("category", String(64), nullable=False),
    Column("scope_kind", String(16), nullable=False),  # "period" | "subject"
    # "2026-11" for a period; the subject's blind index for a subject (never the raw id).
    Column("scope_value", String(64), nullable=False),
    Column("kek_id", String(64), nullable=False),
    Column("wrapped", LargeBinary, nullable=True),  # NULL once destroyed (crypto-shredding)
    Column("uses", BigInteger, nullable=False),
    Column("created_at", String(27), nullable=False),
    Column("destroyed_at", String(27), nullable=True),
    Column("destroyed_by_seq", BigInteger, nullable=True),
)
Index(
    "ix_data_keys_scope",
    data_keys.c.category,
    data_keys.c.scope_kind,
    data_keys.c.scope_value,
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),
)

#: Witness cosignatures of stored checkpoints (C2SP tlog-cosignature; migration 0003).
checkpoint_cosignatures = Table(
    "checkpoint_cosignatures",
    metadata,
    Column(
        "tree_size",
        BigInteger,
        ForeignKey("checkpoints.tree_size"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("witness", String(255), primary_key=True),
    Column("key_hash", String(8), primary_key=True),
    Column("timestamp", BigInteger, nullable=False),
    Column("line", Text, nullable=False),
    Column("received_at", String(27), nullable=False),
)

#: Legal holds stop retention and erasure for what they cover (DESIGN §2, issue: retention).
legal_holds = Table(
    "legal_holds",
    metadata,
    Column("hold_id", String(40), primary_key=True),
    Column("scope", String(16), nullable=False),  # subject | order | category | time_range
    # blind index for subject/order, the category name, or NULL for a pure time range
    Column("scope_value", String(64), nullable=True),
    Column("since", String(27), nullable=True),  # occurred_at bounds, inclusive / exclusive
    Column("until", String(27), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_seq", BigInteger, nullable=False),
    Column("released_by", String(128), nullable=True),
    Column("released_seq", BigInteger, nullable=True),
)

#: Last completed tick of each scheduled job (once per tick across replicas; catch-up once).
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("last_tick", BigInteger, nullable=False),
    Column("last_run_at", String(27), nullable=False),
    Column("last_outcome", String(16), nullable=False),
)

#: Migration 0005: erasure requests around the erasures the chain records (pending, blocked
#: by a legal hold, done); the subject only as its blind index.
erasure_requests = Table(
    "erasure_requests",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("subject_ref", String(64), nullable=False),
    Column("categories", Text, nullable=True),  # JSON list; NULL: every erasable category
    Column("requested_by", String(128), nullable=False),
    Column("requested_at", String(27), nullable=False),
    Column("state", String(16), nullable=False),  # pending | blocked | done
    Column("blocked_by", Text, nullable=True),  # JSON list of hold ids
    Column("last_op_seq", BigInteger, nullable=True),
    Column("updated_at", String(27), nullable=False),
)

#: Migration 0005: console sessions, server-side (DESIGN §8); only the SHA-256 of the id.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("sid_hash", LargeBinary, primary_key=True),
    Column("principal", String(64), nullable=False),
    Column("token_hash", LargeBinary, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
)

#: Ledger tables protected by insert-only guard triggers.
APPEND_ONLY_TABLES = (
    "entries",
    "entry_refs",
    "tree_nodes",
    "checkpoints",
    "payload_purges",
    "checkpoint_cosignatures",
)

principals = Table(
    "principals",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("roles", String(256), nullable=False),  # comma-separated role names
    Column("created_at", String(27), nullable=False),
    Column("revoked_at", String(27), nullable=True),
    # Migration 0004: the ledger_operations entry the row must match (core.commitments), and
    # the entry that revoked it. NULL bound_seq: a row from before 0004, not yet attested.
    Column("bound_seq", BigInteger, nullable=True),
    Column("revoked_seq", BigInteger, nullable=True),
)


#: Migration 0004: what the owner role lets retention and erasure purge (``db grants`` writes it
#: from the policy; the owner's ``audit_ledger_purge`` function and SQLite's triggers read it).
purge_rules = Table(
    "audit_ledger_purge_rules",
    metadata,
    Column("category", String(64), primary_key=True),
    Column("retention", String(32), nullable=True),  # a PostgreSQL interval; NULL: permanent
    Column("erasable", Boolean, nullable=False),
)
