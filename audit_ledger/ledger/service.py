"""The ledger's composition root: what the API, the CLI and the scheduler hold.

:class:`Ledger` wires settings, policy, keys and storage into the use cases, one per domain:

========================  ==================================================================
``ledger.appends``        validate and append events (group commit, bulk import)
``ledger.reads``          read entries, decrypting where the role allows; every read recorded
``ledger.log``            size, leaves, proofs, checkpoints, the verifier key
``ledger.tiles``          C2SP tlog-tiles: tiles, entry bundles, static publication
``ledger.principals``     add, revoke, list, authenticate
``ledger.console_sessions``  the console's server-side sessions and CSRF tokens
``ledger.retention``      the tiered retention run
``ledger.erasure``        erase a data subject: requests kept pending, blocked or done
``ledger.holds``          legal holds (a release resumes the erasures it blocked)
``ledger.key_rotation``   KEK rotation and pruning (through the key provider)
``ledger.checkpoint_rotation``  checkpoint-key rotation (dual-signed window, then finish)
``ledger.verification``   full verification
``ledger.recent_verification`` incremental verification (every minute)
``ledger.operations``     the service's own ``ledger_operations`` records
``ledger.jobs``           scheduled jobs' leader lock and bookkeeping
``ledger.witnessing``     submit checkpoints to outside witnesses, keep their cosignatures
========================  ==================================================================

It holds no request state; one instance serves a whole process (thread-safe: every operation
opens its own transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from audit_ledger.crypto.checkpoint_keys import CheckpointKeys
from audit_ledger.crypto.keys import KeyRing, load_keys
from audit_ledger.ledger.admin import check_schema_on
from audit_ledger.ledger.appends.service import Appends
from audit_ledger.ledger.appends.write import Appender
from audit_ledger.ledger.checkpoint_rotation import CheckpointRotation
from audit_ledger.ledger.console_sessions import ConsoleSessions
from audit_ledger.ledger.erasure import Erasure
from audit_ledger.ledger.holds import Holds
from audit_ledger.ledger.jobs import Jobs
from audit_ledger.ledger.key_check import KeyCheck
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.ledger.keys import Keys
from audit_ledger.ledger.log import Log
from audit_ledger.ledger.operations import Operations, utc_now
from audit_ledger.ledger.principals import Principals
from audit_ledger.ledger.reads import Reads
from audit_ledger.ledger.record_exports import RecordExports
from audit_ledger.ledger.replica import ReadSource
from audit_ledger.ledger.retention import Retention, Shredder
from audit_ledger.ledger.tiles import Tiles
from audit_ledger.ledger.verify import Verification
from audit_ledger.ledger.verify_recent import RecentVerification
from audit_ledger.ledger.witnessing import Witnessing, WitnessTarget
from audit_ledger.observability.pool import PRIMARY, REPLICA, timed_pool
from audit_ledger.policy import Policy, load_policy
from audit_ledger.settings import Settings, parse_witnesses
from audit_ledger.storage.dbstats import DatabaseStats, database_stats
from audit_ledger.storage.engine import create_engine_for_url
from audit_ledger.storage.store import Store

if TYPE_CHECKING:
    from audit_ledger.auditor.mirror import Mirror
    from audit_ledger.auditor.monitor import AuditReport


class Ledger:
    """Every use case over one store."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        keys: KeyRing,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        *,
        read_store: Store | None = None,
    ) -> None:
        self.store = store
        # Reads, leaves, proofs, tiles and exports on a caught-up hot standby (issue #16).
        self.read_store = read_store
        self.read_source = ReadSource(store, read_store)
        self.policy = policy
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.keyring = DataKeyRing(keys.provider)
        self.appender = Appender(store, policy, self.keyring, clock)
        self.appends = Appends(self.appender, policy, keys.indexer, settings)
        self.operations = Operations(policy, keys.indexer, clock, self.appends, self.appender)
        self.reads = Reads(
            store,
            policy,
            self.keyring,
            keys.indexer,
            self.operations,
            settings.page_limit_max,
            self.read_source,
        )
        self.checkpoint_keys = CheckpointKeys(settings.keys_dir, keys.signer)
        self.log = Log(store, self.checkpoint_keys, self.reads, clock, self.read_source)
        self.tiles = Tiles(store, self.log, self.reads)
        self.record_exports = RecordExports(self.reads, self.log)  # regulator exports (#14)
        self.principals = Principals(store, self.operations)
        self.console_sessions = ConsoleSessions(self.principals, store)
        shredder = Shredder(self.keyring, keys.provider)
        self.retention = Retention(store, policy, self.operations, shredder)
        self.erasure = Erasure(store, policy, keys.indexer, self.operations, shredder)
        self.holds = Holds(
            store, policy, keys.indexer, self.operations, on_release=self.erasure.resume
        )
        self.key_rotation = Keys(store, keys.provider, self.operations)
        self.verification = Verification(
            store, self.checkpoint_keys, keys.provider, settings.database_url
        )
        self.checkpoint_rotation = CheckpointRotation(
            settings.keys_dir, self.checkpoint_keys, self.log, self.operations
        )
        self.recent_verification = RecentVerification(store, keys.signer.verifier)
        self.jobs = Jobs(store)
        self.witnessing = Witnessing(
            store,
            self.log,
            [WitnessTarget(url, key) for url, key in parse_witnesses(settings.witnesses)],
            settings.witness_timeout_seconds,
            clock,
        )
        self.key_check = KeyCheck(store, keys.provider, keys.indexer, policy)  # (#12)

    @classmethod
    def open(cls, settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Ledger:
        """Build a ledger from settings: policy, keys and an engine (no database I/O yet)."""
        policy = load_policy(settings.policy_file)
        keys = load_keys(settings.keys_dir, settings.checkpoint_origin)
        store = Store(
            create_engine_for_url(
                settings.database_url,
                pool_size=settings.db_pool_size,
                pool_class=timed_pool(PRIMARY),  # ledger_db_pool_* metrics
            )
        )
        read_store = None
        if settings.read_database_url is not None:
            # A short connect timeout (2 s, the least libpq and psycopg allow): a replica that
            # went away costs a read at most that, once; then ReadSource skips it for a while
            # (reads go to the primary meanwhile).
            read_store = Store(
                create_engine_for_url(
                    settings.read_database_url,
                    pool_size=settings.db_pool_size,
                    connect_timeout=2,
                    pool_class=timed_pool(REPLICA),
                )
            )
        return cls(store, policy, keys, settings, clock, read_store=read_store)

    def close(self) -> None:
        self.appends.stop()
        self.witnessing.close()
        self.store.dispose()
        if self.read_store is not None:
            self.read_store.dispose()

    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine (for instrumentation by the serving process)."""
        return self.store.engine

    def database_stats(self) -> DatabaseStats | None:
        """Server-side connection count and replica lag (PostgreSQL; None on SQLite)."""
        return database_stats(self.store)

    def check_schema(self) -> None:
        """Raise :class:`ConfigError` unless the database is migrated to the current revision."""
        with self.store.reader() as conn:
            check_schema_on(conn)

    def export(self, mirror: Mirror, *, inclusion_checks: int, principal: str) -> AuditReport:
        """Write the checkpointed leaves into an auditor's mirror (recorded as a read)."""
        # The auditor's machinery (and httpx behind it) only for this use case: ``verify`` and
        # ``append`` are whole processes users time, and start faster without it.
        from audit_ledger.ledger.export import export_to_mirror  # noqa: PLC0415

        return export_to_mirror(
            self.log,
            self.operations,
            mirror,
            inclusion_checks=inclusion_checks,
            principal=principal,
        )
