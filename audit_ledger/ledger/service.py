"""The ledger as one object: what the API, the CLI and the scheduler call.

:class:`Ledger` wires settings, policy, keys and storage together and exposes the use cases.
It holds no request state; one instance serves a whole process (it is thread-safe because every
operation opens its own transaction).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, make_url

from audit_ledger.core import merkle
from audit_ledger.core.canonical import MAX_SAFE_INTEGER
from audit_ledger.core.timestamps import format_timestamp, normalise_timestamp
from audit_ledger.crypto.keys import (
    KeyRing,
    load_keys,
    remove_retired_kek,
    retired_kek_ids,
    rotate_kek,
)
from audit_ledger.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    DatabaseUnavailableError,
    FormatError,
    ImportInterruptedError,
    ImportStoppedError,
    NotFoundError,
    RefusedError,
    ValidationError,
)
from audit_ledger.ledger import retention
from audit_ledger.ledger.append import Appender, Receipt
from audit_ledger.ledger.bulk import CommitPipeline
from audit_ledger.ledger.checkpoints import create_checkpoint
from audit_ledger.ledger.events import (
    SUBJECT_REF,
    PreparedEvent,
    PreparedLines,
    prepare_event,
    prepare_lines,
)
from audit_ledger.ledger.holds import REF_OF_SCOPE, HoldMatcher, new_hold_id
from audit_ledger.ledger.holds import SCOPES as HOLD_SCOPES
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.ledger.principals import (
    Principal,
    check_name,
    check_roles,
    new_token,
    token_hash,
    token_shape_ok,
)
from audit_ledger.ledger.reads import (
    EntryReader,
    EntryView,
    categories_for,
    decode_cursor,
    encode_cursor,
)
from audit_ledger.ledger.rekey import RewrapReport, rewrap_data_keys
from audit_ledger.ledger.retention import plan_category
from audit_ledger.ledger.verify import VerifyReport, verify_ledger
from audit_ledger.ledger.workers import WorkerPool
from audit_ledger.policy import LEDGER_OPERATIONS, Policy, load_policy
from audit_ledger.settings import Settings
from audit_ledger.storage import jobs
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.engine import create_engine_for_url
from audit_ledger.storage.entries import EntryFilter
from audit_ledger.storage.holds import StoredHold
from audit_ledger.storage.migrations import current_revision, head_revision
from audit_ledger.storage.principals import StoredPrincipal
from audit_ledger.storage.store import Store, WriteTx


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Counts of a bulk import."""

    appended: int
    already_present: int


def _chunks(lines: Iterable[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


#: Writer name of the entries the service records about itself.
SYSTEM_WRITER = "audit-ledger"
#: Below this size a verify runs in one process: starting workers would cost more than it saves.
PARALLEL_VERIFY_MIN_SIZE = 100_000
MAX_VERIFY_JOBS = 8
#: How long a successful token look-up is reused (revocation takes effect within this).
AUTH_CACHE_SECONDS = 2.0
#: Size bound of the service's own records (a retention run lists seq ranges and key ids).
SYSTEM_MAX_DATA_BYTES = 8 * 1024 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Query:
    """Read filters (non-identifying ones plus identifiers matched through the blind index)."""

    category: str | None = None
    event_type: str | None = None
    since: str | None = None
    until: str | None = None
    user_id: str | int | None = None
    order_id: str | int | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass
class RetentionReport:
    """What a retention run or an erasure destroyed (or, for a dry run, would destroy)."""

    run_at: str
    categories: dict[str, dict[str, object]]
    dry_run: bool
    op_seq: int | None = None
    op_seqs: list[int] = field(default_factory=list)
    kept_by_policy: list[str] = field(default_factory=list)

    @property
    def more_pending(self) -> bool:
        return any(bool(c.get("more_pending")) for c in self.categories.values())

    def absorb(self, later: RetentionReport) -> None:
        """Fold a follow-up run (same call, larger backlog) into this report."""
        self.op_seqs.extend(later.op_seqs)
        for name, outcome in later.categories.items():
            mine = self.categories.setdefault(name, {})
            for key, value in outcome.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    mine[key] = int(mine.get(key, 0)) + value  # type: ignore[call-overload]
                elif isinstance(value, list):
                    mine[key] = [*mine.get(key, []), *value]  # type: ignore[misc]
                else:
                    mine[key] = value

    def to_dict(self) -> dict[str, object]:
        return {
            "run_at": self.run_at,
            "dry_run": self.dry_run,
            "recorded_as_seq": self.op_seq,
            "recorded_as_seqs": self.op_seqs,
            "categories": self.categories,
            "kept_by_policy": self.kept_by_policy,
        }


@dataclass(frozen=True, slots=True)
class Page:
    events: list[EntryView]
    next_cursor: str | None


def _bad(field: str, problem: str) -> ValidationError:
    return ValidationError(f"{field}: {problem}", [{"field": field, "problem": problem}])


class Ledger:
    """Use cases over one store."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        keys: KeyRing,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.policy = policy
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.keyring = DataKeyRing(keys.provider)
        self.appender = Appender(store, policy, self.keyring, clock)
        self.reader = EntryReader(store, policy, self.keyring)
        self._auth_cache: dict[bytes, tuple[Principal, float]] = {}

    @classmethod
    def open(cls, settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Ledger:
        """Build a ledger from settings: policy, keys and an engine (no database I/O yet)."""
        policy = load_policy(settings.policy_file)
        keys = load_keys(settings.keys_dir, settings.checkpoint_origin)
        store = Store(create_engine_for_url(settings.database_url, pool_size=settings.db_pool_size))
        return cls(store, policy, keys, settings, clock)

    def close(self) -> None:
        self.store.dispose()

    def check_schema(self) -> None:
        """Raise :class:`ConfigError` unless the database is migrated to the current revision."""
        with self.store.reader() as conn:
            if not inspect(conn).has_table("ledger_head"):
                raise ConfigError("database is not migrated: run 'audit-ledger db upgrade'")
            current = current_revision(conn)
        if current != head_revision():
            raise ConfigError(
                f"database schema is at {current}, this version needs {head_revision()}: "
                "run 'audit-ledger db upgrade'"
            )

    # -- append --------------------------------------------------------------------------------

    def prepare(self, raw: object, *, location: str = "") -> PreparedEvent:
        return prepare_event(
            raw,
            self.policy,
            self.keys.indexer,
            max_data_bytes=self.settings.max_event_bytes,
            location=location,
        )

    def prepare_batch(
        self, raws: Sequence[object], *, prefix: str = "events"
    ) -> list[PreparedEvent]:
        """Validate every event; all failures of the batch are reported together."""
        prepared: list[PreparedEvent] = []
        fields: list[dict[str, str]] = []
        for i, raw in enumerate(raws):
            try:
                prepared.append(self.prepare(raw, location=f"{prefix}[{i}]."))
            except ValidationError as exc:
                fields.extend(exc.fields)
        if fields:
            raise ValidationError("batch is invalid; nothing was written", fields)
        return prepared

    def append(self, events: Sequence[PreparedEvent], writer: str | Sequence[str]) -> list[Receipt]:
        return self.appender.append(events, writer)

    def import_lines(
        self,
        lines: Iterable[tuple[int, str]],
        writer: str,
        *,
        batch_size: int = 1000,
        jobs: int = 1,
    ) -> ImportResult:
        """Bulk import: numbered JSON lines (bodies of ``POST /v1/events``), one transaction
        per ``batch_size`` lines.

        Each batch commits while the next is sealed (:class:`CommitPipeline`); with ``jobs``
        > 1, that many worker processes also parse and validate upcoming batches. A bad line
        stops the import after committing every line before it (:class:`ImportStoppedError`
        says where and how many); rerunning the corrected input is safe, appends being
        idempotent.
        """
        check_name(writer)
        chunks = _chunks(lines, batch_size)
        setup = {
            "policy_file": self.settings.policy_file,
            "keys_dir": self.settings.keys_dir,
            "origin": self.settings.checkpoint_origin,
            "max_data_bytes": self.settings.max_event_bytes,
        }
        with contextlib.ExitStack() as stack:
            if jobs > 1:
                pool = stack.enter_context(WorkerPool("prepare", setup, jobs))
                results: Iterable[PreparedLines] = pool.map(chunks)
            else:
                limit = self.settings.max_event_bytes
                results = (
                    prepare_lines(c, self.policy, self.keys.indexer, max_data_bytes=limit)
                    for c in chunks
                )
            pipeline = stack.enter_context(CommitPipeline(self.appender, writer))
            try:
                for result in results:
                    pipeline.add(result.events, result.numbers)
                    if result.bad_line is not None:
                        pipeline.finish()
                        raise ImportStoppedError(
                            result.bad_line,
                            result.problem or "invalid",
                            pipeline.appended,
                            pipeline.already_present,
                        )
                pipeline.finish()
            except DatabaseUnavailableError:
                # "Unreachable" would send the operator to check the URL of a database that
                # was there a moment ago; say what committed and how to finish instead.
                raise ImportInterruptedError(pipeline.appended, pipeline.already_present) from None
        return ImportResult(pipeline.appended, pipeline.already_present)

    def record_operation(self, event_type: str, data: Mapping[str, Any]) -> Receipt:
        """Append a ``ledger_operations`` entry written by the service itself."""
        return self.appender.append([self.operation_event(event_type, data)], SYSTEM_WRITER)[0]

    # -- principals ----------------------------------------------------------------------------

    def operation_event(self, event_type: str, data: Mapping[str, Any]) -> PreparedEvent:
        """A prepared `ledger_operations` event written by the service itself."""
        raw = {
            "event_id": str(uuid.uuid4()),
            "category": LEDGER_OPERATIONS,
            "event_type": event_type,
            "occurred_at": format_timestamp(self.clock()),
            "correlation_id": None,
            "data": dict(data),
        }
        return prepare_event(
            raw,
            self.policy,
            self.keys.indexer,
            max_data_bytes=SYSTEM_MAX_DATA_BYTES,
            allow_system=True,
        )

    def add_principal(self, name: str, roles: Iterable[str], *, actor: str = "cli") -> str:
        """Create a principal; return its bearer token (shown once, stored only hashed)."""
        check_name(name)
        chosen = check_roles(roles)
        token = new_token()
        now = format_timestamp(self.clock())
        op = self.operation_event(
            "principal_added", {"principal": name, "roles": list(chosen), "actor": actor}
        )
        with self.store.writer() as tx:
            tx.head()  # the head lock first, as for every write (DESIGN §5)
            stored = StoredPrincipal(name, token_hash(token), chosen, now, None)
            if not tx.insert_principal(stored):
                raise ConflictError(f"principal {name!r} already exists")
            self.appender.append_locked(tx, [op], SYSTEM_WRITER)
        return token

    def revoke_principal(self, name: str, *, actor: str = "cli") -> None:
        check_name(name)
        op = self.operation_event("principal_revoked", {"principal": name, "actor": actor})
        with self.store.writer() as tx:
            tx.head()
            if not tx.revoke_principal(name, format_timestamp(self.clock())):
                raise NotFoundError(f"no active principal named {name!r}")
            self.appender.append_locked(tx, [op], SYSTEM_WRITER)
        self._auth_cache.clear()

    def principals(self) -> list[StoredPrincipal]:
        return self.store.principals()

    def cached_principal(self, token: str) -> Principal | None:
        """The principal holding ``token`` if a recent look-up is cached (no I/O, so the
        service can answer from its event loop); None when :meth:`authenticate` must ask the
        database. A malformed token raises :class:`AuthenticationError` right away."""
        if not token_shape_ok(token):
            raise AuthenticationError("malformed")
        cached = self._auth_cache.get(token_hash(token))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def authenticate(self, token: str) -> Principal:
        """The principal holding ``token``; :class:`AuthenticationError` with a reason code.

        Successful look-ups are cached for :data:`AUTH_CACHE_SECONDS` (by token hash), which
        saves a database round trip per request; a revocation therefore takes effect within
        that many seconds. Failures are never cached.
        """
        if not token_shape_ok(token):
            raise AuthenticationError("malformed")
        digest = token_hash(token)
        now = time.monotonic()
        cached = self._auth_cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = self.store.principal_by_token_hash(digest)
        if stored is None:
            raise AuthenticationError("unknown")
        if stored.revoked_at is not None:
            raise AuthenticationError("revoked")
        principal = Principal(stored.name, frozenset(stored.roles))
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[digest] = (principal, now + AUTH_CACHE_SECONDS)
        return principal

    # -- retention, erasure, legal holds -------------------------------------------------------

    def run_retention(self, *, dry_run: bool = False) -> RetentionReport:
        """Purge expired payloads and destroy expired keys (DESIGN §2); each transaction is one
        recorded run. A backlog larger than one run's bound is worked off in further runs
        straight away; the report covers them all, with ``op_seqs`` naming each record."""
        report = self._retention_once(dry_run)
        while not dry_run and report.more_pending:
            more = self._retention_once(False)
            report.absorb(more)
        return report

    def _retention_once(self, dry_run: bool) -> RetentionReport:
        now = self.clock()
        when = format_timestamp(now)
        with self.store.writer() as tx:
            tx.head()
            matcher = HoldMatcher(tx.active_holds())
            plan = {
                name: plan_category(tx, category, now, matcher)
                for name, category in sorted(self.policy.categories.items())
                if not category.retention.permanent and not category.system
            }
            report = RetentionReport(when, {k: v.to_dict() for k, v in plan.items()}, dry_run)
            if dry_run:
                return report
            op = self.operation_event(
                "retention_run", {"run_at": when, "categories": report.categories}
            )
            report.op_seq = self.appender.append_locked(tx, [op], SYSTEM_WRITER)[0].seq
            report.op_seqs = [report.op_seq]
            retention.apply(tx, plan, report.op_seq, retention.RETENTION, when)
            # Under the head lock no append is half-way, so a key-store file without a live row
            # is left over from a rolled-back append or an interrupted destruction: remove it.
            stray = self._stray_external_keys(tx)
        self._destroy_external([k for o in plan.values() for k in o.keys] + stray)
        return report

    def _stray_external_keys(self, tx: WriteTx) -> list[str]:
        stored = self.keys.provider.external_key_ids()
        if not stored:
            return []
        rows = tx.keys_by_id(stored)
        return [k for k in stored if k not in rows or rows[k].wrapped is None]

    def _destroy_external(self, key_ids: Sequence[str]) -> None:
        """After the destruction committed: forget the keys and delete their key-store files."""
        for key_id in key_ids:
            self.keyring.forget(key_id)
            self.keys.provider.destroy_external(key_id)

    # -- key-encryption key rotation -----------------------------------------------------------

    def rotate_kek(self, *, actor: str = "cli") -> tuple[str, RewrapReport]:
        """Make a new KEK (the old one is kept as retired), re-wrap every data key with it and
        record the rotation; returns the old KEK's id and what was re-wrapped."""
        old_id, _ = rotate_kek(self.settings.keys_dir)
        report = rewrap_data_keys(self.store, self.keys.provider)
        self.record_operation(
            "kek_rotated", {"actor": actor, "retired_kek_id": old_id, **report.to_dict()}
        )
        return old_id, report

    def prune_keks(self, *, actor: str = "cli") -> tuple[RewrapReport, list[str], list[str]]:
        """Re-wrap keys that processes still running on a retired KEK made meanwhile, then
        delete every retired KEK no data key needs; returns the re-wrap, removed and kept ids."""
        report = rewrap_data_keys(self.store, self.keys.provider)
        in_use = self.store.kek_ids_in_use()
        retired = retired_kek_ids(self.settings.keys_dir)
        removed = [kek_id for kek_id in retired if kek_id not in in_use]
        for kek_id in removed:
            remove_retired_kek(self.settings.keys_dir, kek_id)
        kept = [kek_id for kek_id in retired if kek_id in in_use]
        if removed or report.rewrapped or report.missing:
            self.record_operation(
                "keks_pruned",
                {"actor": actor, "removed": removed, "kept": kept, **report.to_dict()},
            )
        return report, removed, kept

    def erase_subject(
        self, user_id: str | int, *, categories: Sequence[str] | None = None, actor: str = "cli"
    ) -> RetentionReport:
        """Erase one data subject: destroy its keys in every erasable category (or the ones
        named) and delete those payloads. Naming a category whose policy forbids erasure is
        refused; held data is skipped and reported."""
        if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
            raise _bad("user_id", "must be a non-empty string or an integer")
        names = list(categories) if categories else None
        for name in names or []:
            category = self.policy.category(name)
            if not category.erasable:
                raise RefusedError(
                    f"{name} may not be erased: its policy keeps these records "
                    f"({category.retention}) — e.g. financial records kept by law"
                )
        targets = [
            c
            for c in self.policy.categories.values()
            if c.erasable and (names is None or c.name in names)
        ]
        subject = self.keys.indexer.index(SUBJECT_REF, user_id)
        now = self.clock()
        when = format_timestamp(now)
        kept = sorted(
            c.name
            for c in self.policy.categories.values()
            if not c.erasable and not c.system and names is None
        )
        with self.store.writer() as tx:
            tx.head()
            plan = retention.plan_erasure(tx, targets, subject, HoldMatcher(tx.active_holds()))
            report = RetentionReport(when, {k: v.to_dict() for k, v in plan.items()}, False)
            op = self.operation_event(
                "erasure",
                {
                    "run_at": when,
                    "subject_ref": subject,
                    "requested_by": actor,
                    "categories": report.categories,
                    "kept_by_policy": kept,
                },
            )
            report.op_seq = self.appender.append_locked(tx, [op], SYSTEM_WRITER)[0].seq
            retention.apply(tx, plan, report.op_seq, retention.ERASURE, when)
        self._destroy_external([k for o in plan.values() for k in o.keys])
        report.kept_by_policy = kept
        return report

    def create_hold(
        self,
        scope: str,
        *,
        value: str | int | None = None,
        since: str | None = None,
        until: str | None = None,
        reason: str | None = None,
        actor: str = "cli",
    ) -> StoredHold:
        """Place a legal hold on a subject, an order, a category or an occurred_at range."""
        if scope not in HOLD_SCOPES:
            raise _bad("scope", f"must be one of {', '.join(HOLD_SCOPES)}")
        scope_value: str | None = None
        if scope in ("subject", "order"):
            if value is None or isinstance(value, bool) or value == "":
                raise _bad("value", "a user_id or order_id is required")
            scope_value = self.keys.indexer.index(REF_OF_SCOPE[scope], value)
        elif scope == "category":
            if not isinstance(value, str):
                raise _bad("category", "a category is required")
            self.policy.category(value)
            scope_value = value
        lo, hi = self._bound("since", since), self._bound("until", until)
        if scope == "time_range" and lo is None and hi is None:
            raise _bad("since", "a time range needs since and/or until")
        if lo is not None and hi is not None and lo >= hi:
            raise _bad("until", "must be after since")
        hold_id = new_hold_id()
        op = self.operation_event(
            "legal_hold_created",
            {
                "hold_id": hold_id,
                "scope": scope,
                "scope_value": scope_value,
                "since": lo,
                "until": hi,
                "reason": reason,
                "actor": actor,
            },
        )
        with self.store.writer() as tx:
            tx.head()
            seq = self.appender.append_locked(tx, [op], SYSTEM_WRITER)[0].seq
            hold = StoredHold(hold_id, scope, scope_value, lo, hi, actor, seq)
            tx.insert_hold(hold)
        return hold

    def release_hold(self, hold_id: str, *, actor: str = "cli") -> int:
        op = self.operation_event("legal_hold_released", {"hold_id": hold_id, "actor": actor})
        with self.store.writer() as tx:
            tx.head()
            seq = self.appender.append_locked(tx, [op], SYSTEM_WRITER)[0].seq
            if not tx.release_hold(hold_id, actor, seq):
                raise NotFoundError(f"no active legal hold {hold_id!r}")
        return seq

    def holds(self) -> list[StoredHold]:
        return self.store.holds()

    # -- reads ---------------------------------------------------------------------------------

    def query(self, roles: Iterable[str], q: Query) -> Page:
        roles = frozenset(roles)
        categories = categories_for(self.policy, roles, q.category)
        if not 1 <= q.limit <= self.settings.page_limit_max:
            raise _bad("limit", f"must be between 1 and {self.settings.page_limit_max}")
        since = self._bound("since", q.since)
        until = self._bound("until", q.until)
        if since is not None and until is not None and since > until:
            raise _bad("until", "must not be before since")
        refs = {}
        if q.user_id is not None:
            refs["user"] = self.keys.indexer.index("user", q.user_id)
        if q.order_id is not None:
            refs["order"] = self.keys.indexer.index("order", q.order_id)
        after = decode_cursor(q.cursor) if q.cursor else None
        flt = EntryFilter(frozenset(categories), q.event_type, since, until, refs or None)
        stored = self.store.scan(flt, after, q.limit + 1)
        more = len(stored) > q.limit
        stored = stored[: q.limit]
        next_cursor = encode_cursor(stored[-1].seq) if more and stored else None
        return Page(self.reader.views(stored, roles), next_cursor)

    @staticmethod
    def _bound(name: str, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_timestamp(value)
        except FormatError:
            raise _bad(name, "must be an RFC 3339 timestamp with offset") from None

    def entry(self, roles: Iterable[str], seq: int) -> EntryView:
        roles = frozenset(roles)
        # Seqs are header integers (< 2^53): larger ones cannot exist and would overflow the
        # database parameter (a 500) rather than be "not found".
        stored = self.store.entry(seq) if 0 <= seq <= MAX_SAFE_INTEGER else None
        if stored is None:
            raise NotFoundError(f"no entry with seq {seq}")
        categories_for(self.policy, roles, stored.category)
        return self.reader.views([stored], roles)[0]

    # -- log and proofs ------------------------------------------------------------------------

    def size(self) -> int:
        return self.store.size()

    def leaves(self, start: int, end: int) -> list[tuple[int, bytes]]:
        size = self.size()
        if not 0 <= start < end <= size:
            raise _bad("end", f"need 0 <= start < end <= log size ({size})")
        return self.store.leaves(start, min(end, start + 1000))

    def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        size = self.size()
        if not 0 <= seq < tree_size <= size:
            raise _bad("tree_size", f"need 0 <= seq < tree_size <= log size ({size})")
        return merkle.inclusion_proof(seq, tree_size, self.store.read_hashes)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        size = self.size()
        if not 1 <= first <= second <= size:
            raise _bad("second", f"need 1 <= first <= second <= log size ({size})")
        return merkle.consistency_proof(first, second, self.store.read_hashes)

    def root(self, tree_size: int) -> bytes:
        return merkle.tree_root(tree_size, self.store.read_hashes)

    # -- checkpoints and verification ----------------------------------------------------------

    def checkpoint(self) -> StoredCheckpoint | None:
        """Sign a checkpoint of the current log (None for an empty log) and note when."""
        before = self.store.latest_checkpoint()
        made = create_checkpoint(self.store, self.keys.signer)
        if made is not None and (before is None or made.tree_size > before.tree_size):
            jobs.record_run(
                self.store,
                "checkpoint_signed",
                made.tree_size,
                format_timestamp(self.clock()),
                "signed",
            )
        return made

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        return self.store.latest_checkpoint()

    def verifier_key(self) -> str:
        return self.keys.signer.verifier.encode()

    def verify(
        self, progress: Callable[[int], None] | None = None, *, jobs: int | None = None
    ) -> VerifyReport:
        """Verify the whole ledger; ``jobs`` processes check entries (None: one per core for
        a log large enough to repay starting them, else this process alone)."""
        url = self.settings.database_url
        if jobs is None:
            # From the entries, not the head row: verification must work when that is damaged.
            big = (self.store.last_seq() or 0) + 1 >= PARALLEL_VERIFY_MIN_SIZE
            jobs = min(os.cpu_count() or 1, MAX_VERIFY_JOBS) if big else 1
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            jobs = 1  # an in-memory database cannot be opened by another process
        return verify_ledger(
            self.store,
            self.keys.signer.verifier,
            keys=self.keys.provider,
            progress=progress,
            jobs=jobs,
            database_url=url,
        )
