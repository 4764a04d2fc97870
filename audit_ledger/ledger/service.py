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

import threading
from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from audit_ledger.core.timestamps import utc_now
from audit_ledger.crypto.checkpoint_keys import CheckpointKeys
from audit_ledger.crypto.keys import KeyRing, load_keys
from audit_ledger.ledger.admin import check_schema_on
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.ledger.replica import ReadSource
from audit_ledger.observability.pool import PRIMARY, REPLICA, timed_pool
from audit_ledger.policy import Policy, load_policy
from audit_ledger.settings import Settings
from audit_ledger.storage.dbstats import DatabaseStats, database_stats
from audit_ledger.storage.engine import create_engine_for_url
from audit_ledger.storage.store import Store

if TYPE_CHECKING:
    from audit_ledger.auditor.mirror import Mirror
    from audit_ledger.auditor.monitor import AuditReport
    from audit_ledger.ledger.appends.service import Appends
    from audit_ledger.ledger.appends.write import Appender
    from audit_ledger.ledger.checkpoint_rotation import CheckpointRotation
    from audit_ledger.ledger.console_sessions import ConsoleSessions
    from audit_ledger.ledger.erasure import Erasure
    from audit_ledger.ledger.holds import Holds
    from audit_ledger.ledger.jobs import Jobs
    from audit_ledger.ledger.key_check import KeyCheck
    from audit_ledger.ledger.keys import Keys
    from audit_ledger.ledger.log import Log
    from audit_ledger.ledger.operations import Operations
    from audit_ledger.ledger.principals import Principals
    from audit_ledger.ledger.reads import Reads
    from audit_ledger.ledger.record_exports import RecordExports
    from audit_ledger.ledger.retention import Retention, Shredder
    from audit_ledger.ledger.tiles import Tiles
    from audit_ledger.ledger.verify import Verification
    from audit_ledger.ledger.verify_recent import RecentVerification
    from audit_ledger.ledger.witnessing import Witnessing

_T = TypeVar("_T")


class _use_case(cached_property[_T]):  # noqa: N801 - used like functools.cached_property
    """A use case built on first use, then kept: ``audit-ledger append`` and ``verify`` are
    whole processes users time (issue #16), and need neither the imports nor the set-up of
    retention, erasure, witnessing, tiles, exports and the rest.

    Built once per ledger even when threads race for it (the API's request threads):
    ``functools.cached_property`` lost its lock in Python 3.12, and a use case built twice
    could leave one copy unclosed. One lock for all, re-entrant: building one use case may
    build those it is made of. Once built, the value sits in the instance's ``__dict__`` and
    this descriptor is no longer consulted."""

    _lock = threading.RLock()

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> _T: ...
    def __get__(self, instance: object | None, owner: type[Any] | None = None) -> Self | _T:
        if instance is None:
            return self
        with self._lock:
            return super().__get__(instance, owner)


class Ledger:
    """Every use case over one store (those beyond appending and verifying built on first
    use, see :class:`_use_case`)."""

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
        self.checkpoint_keys = CheckpointKeys(settings.keys_dir, keys.signer)

    # Each use case imports its module when first built (PLC0415): that is the point.

    @_use_case
    def appender(self) -> Appender:
        from audit_ledger.ledger.appends.write import Appender  # noqa: PLC0415

        return Appender(self.store, self.policy, self.keyring, self.clock)

    @_use_case
    def appends(self) -> Appends:
        from audit_ledger.ledger.appends.service import Appends  # noqa: PLC0415

        return Appends(self.appender, self.policy, self.keys.indexer, self.settings)

    @_use_case
    def operations(self) -> Operations:
        from audit_ledger.ledger.operations import Operations  # noqa: PLC0415

        return Operations(self.policy, self.keys.indexer, self.clock, self.appends, self.appender)

    @_use_case
    def reads(self) -> Reads:
        from audit_ledger.ledger.reads import Reads  # noqa: PLC0415

        return Reads(
            self.store,
            self.policy,
            self.keyring,
            self.keys.indexer,
            self.operations,
            self.settings.page_limit_max,
            self.read_source,
        )

    @_use_case
    def log(self) -> Log:
        from audit_ledger.ledger.log import Log  # noqa: PLC0415

        return Log(self.store, self.checkpoint_keys, self.reads, self.clock, self.read_source)

    @_use_case
    def tiles(self) -> Tiles:
        from audit_ledger.ledger.tiles import Tiles  # noqa: PLC0415

        return Tiles(self.store, self.log, self.reads)

    @_use_case
    def record_exports(self) -> RecordExports:
        """Regulator exports (#14)."""
        from audit_ledger.ledger.record_exports import RecordExports  # noqa: PLC0415

        return RecordExports(self.reads, self.log)

    @_use_case
    def principals(self) -> Principals:
        from audit_ledger.ledger.principals import Principals  # noqa: PLC0415

        return Principals(self.store, self.operations)

    @_use_case
    def console_sessions(self) -> ConsoleSessions:
        from audit_ledger.ledger.console_sessions import ConsoleSessions  # noqa: PLC0415

        return ConsoleSessions(self.principals, self.store)

    @_use_case
    def _shredder(self) -> Shredder:
        """Shared by retention and erasure."""
        from audit_ledger.ledger.retention import Shredder  # noqa: PLC0415

        return Shredder(self.keyring, self.keys.provider)

    @_use_case
    def retention(self) -> Retention:
        from audit_ledger.ledger.retention import Retention  # noqa: PLC0415

        return Retention(self.store, self.policy, self.operations, self._shredder)

    @_use_case
    def erasure(self) -> Erasure:
        from audit_ledger.ledger.erasure import Erasure  # noqa: PLC0415

        return Erasure(self.store, self.policy, self.keys.indexer, self.operations, self._shredder)

    @_use_case
    def holds(self) -> Holds:
        from audit_ledger.ledger.holds import Holds  # noqa: PLC0415

        return Holds(
            self.store,
            self.policy,
            self.keys.indexer,
            self.operations,
            on_release=self.erasure.resume,
        )

    @_use_case
    def key_rotation(self) -> Keys:
        from audit_ledger.ledger.keys import Keys  # noqa: PLC0415

        return Keys(self.store, self.keys.provider, self.operations)

    @_use_case
    def verification(self) -> Verification:
        from audit_ledger.ledger.verify import Verification  # noqa: PLC0415

        return Verification(
            self.store, self.checkpoint_keys, self.keys.provider, self.settings.database_url
        )

    @_use_case
    def checkpoint_rotation(self) -> CheckpointRotation:
        from audit_ledger.ledger.checkpoint_rotation import CheckpointRotation  # noqa: PLC0415

        return CheckpointRotation(
            self.settings.keys_dir, self.checkpoint_keys, self.log, self.operations
        )

    @_use_case
    def recent_verification(self) -> RecentVerification:
        from audit_ledger.ledger.verify_recent import RecentVerification  # noqa: PLC0415

        return RecentVerification(self.store, self.keys.signer.verifier)

    @_use_case
    def jobs(self) -> Jobs:
        from audit_ledger.ledger.jobs import Jobs  # noqa: PLC0415

        return Jobs(self.store)

    @_use_case
    def witnessing(self) -> Witnessing:
        from audit_ledger.ledger.witnessing import Witnessing, WitnessTarget  # noqa: PLC0415
        from audit_ledger.settings import parse_witnesses  # noqa: PLC0415

        return Witnessing(
            self.store,
            self.log,
            [WitnessTarget(url, key) for url, key in parse_witnesses(self.settings.witnesses)],
            self.settings.witness_timeout_seconds,
            self.clock,
        )

    @_use_case
    def key_check(self) -> KeyCheck:
        """(#12)"""
        from audit_ledger.ledger.key_check import KeyCheck  # noqa: PLC0415

        return KeyCheck(self.store, self.keys.provider, self.keys.indexer, self.policy)

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
        # Only what was built: building it now would be work (and imports) for nothing.
        if "appends" in self.__dict__:
            self.appends.stop()
        if "witnessing" in self.__dict__:  # built (and so opened) only if it was used
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
