"""Appending events: the one pipeline every writer goes through.

A body is validated and prepared (:mod:`.prepare`), then written by the core write operation
(:class:`~.write.Appender`) through one of two strategies beside it: group commit for concurrent
requests (:mod:`.group_commit`, the HTTP service) and the pipelined bulk import
(:mod:`.bulk`, ``audit-ledger append``). :class:`Appends` is the use case the shells call: the
API hands it the parsed request body and gets a future of receipts; what was appended, replayed,
refused or failed is counted and logged here (never payload data).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.errors import (
    ConflictError,
    DatabaseUnavailableError,
    ImportInterruptedError,
    ImportStoppedError,
    PayloadTooLargeError,
    ValidationError,
)
from audit_ledger.ledger.appends.bulk import CommitPipeline
from audit_ledger.ledger.appends.defaults import IMPORT_BATCH_SIZE
from audit_ledger.ledger.appends.group_commit import GroupCommitter
from audit_ledger.ledger.appends.prepare import (
    PreparedEvent,
    PreparedLines,
    prepare_event,
    prepare_lines,
)
from audit_ledger.ledger.appends.write import Appender, Receipt
from audit_ledger.ledger.bodies import json_object
from audit_ledger.ledger.identity import check_name
from audit_ledger.ledger.workers import WorkerPool
from audit_ledger.observability import metrics
from audit_ledger.observability.loggers import get_logger
from audit_ledger.policy import Policy
from audit_ledger.settings import Settings

app_log = get_logger("application")


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Counts of a bulk import."""

    appended: int
    already_present: int


def _chunks(lines: Iterable[tuple[int, str]], size: int) -> Iterable[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Appends:
    """Validate, prepare and append events; one committing thread per serving process."""

    def __init__(
        self, appender: Appender, policy: Policy, indexer: BlindIndexer, settings: Settings
    ) -> None:
        self.appender = appender
        self.policy = policy
        self.indexer = indexer
        self.settings = settings
        self.committer = GroupCommitter(appender)

    # -- the serving process's group commit ------------------------------------------------------

    def start(self) -> None:
        """Commit submissions in groups from now on (a serving process)."""
        self.committer.start()

    def stop(self) -> None:
        self.committer.stop()

    def submit(self, events: Sequence[PreparedEvent], writer: str) -> Future[list[Receipt]]:
        """Append through the group committer (straight away when it is not running)."""
        return self.committer.submit(events, writer)

    # -- validation ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The time the policy's ``occurred_at`` rules are checked against: the ledger's clock
        (which gives ``recorded_at``), never earlier than the wall clock. In a serving process
        both are the same clock; a ledger opened with a clock of its own (years of retention
        simulated in tests) moves the bound forward with it."""
        return max(self.appender.clock(), datetime.now(UTC))

    def prepare(
        self, raw: object, *, location: str = "", now: datetime | None = None
    ) -> PreparedEvent:
        return prepare_event(
            raw,
            self.policy,
            self.indexer,
            max_data_bytes=self.settings.max_event_bytes,
            location=location,
            now=now if now is not None else self.now(),
        )

    def prepare_batch(
        self, raws: Sequence[object], *, prefix: str = "events"
    ) -> list[PreparedEvent]:
        """Validate every event; all failures of the batch are reported together."""
        prepared: list[PreparedEvent] = []
        fields: list[dict[str, str]] = []
        now = self.now()  # once per batch
        for i, raw in enumerate(raws):
            try:
                prepared.append(self.prepare(raw, location=f"{prefix}[{i}].", now=now))
            except ValidationError as exc:
                fields.extend(exc.fields)
        if fields:
            raise ValidationError("batch is invalid; nothing was written", fields)
        return prepared

    # -- the ways in -----------------------------------------------------------------------------

    def append(self, events: Sequence[PreparedEvent], writer: str | Sequence[str]) -> list[Receipt]:
        """Append prepared events in this thread, in one transaction."""
        return self.appender.append(events, writer)

    async def accept_event(self, body: Any, writer: str) -> list[Receipt]:
        """``POST /v1/events``: one event's parsed JSON body, appended by group commit."""
        try:
            event = self.prepare(body)
        except ValidationError:
            metrics.APPENDS.labels("unknown", "invalid").inc()
            raise
        try:
            return await self._observed([event], writer)
        except ConflictError as exc:
            # One event, no batch: no "(events[0])" position for a client that sent none.
            raise ConflictError(str(exc)) from None

    async def accept_batch(self, body: Any, writer: str) -> list[Receipt]:
        """``POST /v1/events/batch``: ``{"events": [...]}``, all or nothing."""
        events = json_object(body, {"events"}, "batch").get("events")
        if not isinstance(events, list) or not events:
            raise ValidationError(
                "events must be a non-empty list",
                [{"field": "events", "problem": "must be a non-empty list"}],
            )
        if len(events) > self.settings.max_batch_events:
            raise PayloadTooLargeError(
                f"a batch holds at most {self.settings.max_batch_events} events"
            )
        try:
            prepared = self.prepare_batch(events)
        except ValidationError:
            metrics.APPENDS.labels("unknown", "invalid").inc(len(events))
            raise
        return await self._observed(prepared, writer)

    async def _observed(self, events: list[PreparedEvent], writer: str) -> list[Receipt]:
        """Submit to group commit and await the receipts without holding a thread; the outcome
        is counted and logged here, on the caller's event loop (in the request's log context),
        never in the committing thread, which goes straight on to the next group."""
        metrics.APPEND_BATCH_SIZE.observe(len(events))
        try:
            receipts = await asyncio.wrap_future(self.submit(events, writer))
        except ConflictError:
            metrics.CONFLICTS.inc()
            _count(events, "conflict")
            raise
        except Exception:
            _count(events, "error")
            raise
        _observe(events, writer, receipts)
        return receipts

    def import_lines(
        self,
        lines: Iterable[tuple[int, str]],
        writer: str,
        *,
        batch_size: int = IMPORT_BATCH_SIZE,
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
                release = self.appender.store.release_connections
                pool = stack.enter_context(WorkerPool("prepare", setup, jobs, release=release))
                results: Iterable[PreparedLines] = pool.map(chunks)
            else:
                limit = self.settings.max_event_bytes
                results = (  # the policy's occurred_at rules against now, chunk by chunk
                    prepare_lines(
                        c, self.policy, self.indexer, max_data_bytes=limit, now=self.now()
                    )
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


def _count(events: list[PreparedEvent], outcome: str) -> None:
    for category, count in Counter(e.category for e in events).items():
        metrics.APPENDS.labels(category, outcome).inc(count)


def _observe(events: list[PreparedEvent], writer: str, receipts: list[Receipt]) -> None:
    """Count and log a submission's receipts (never payload data)."""
    # One increment per (category, outcome), not per event: a batch holds hundreds of events.
    outcomes = Counter(
        (event.category, "replayed" if receipt.replayed else "appended")
        for event, receipt in zip(events, receipts, strict=True)
    )
    for (category, outcome), count in outcomes.items():
        metrics.APPENDS.labels(category, outcome).inc(count)
    replays = sum(count for (_, outcome), count in outcomes.items() if outcome == "replayed")
    metrics.REPLAYS.inc(replays)
    if len(events) == 1:
        app_log.info(
            "event_appended",
            seq=receipts[0].seq,
            category=events[0].category,
            event_type=events[0].event_type,
            event_correlation_id=events[0].correlation_id,
            replayed=receipts[0].replayed,
            writer=writer,
        )
        return
    kinds = Counter(f"{event.category}/{event.event_type}" for event in events)
    app_log.info(
        "events_appended",
        count=len(events),
        replayed=replays,
        first_seq=min(r.seq for r in receipts),
        last_seq=max(r.seq for r in receipts),
        types=dict(kinds),
        writer=writer,
    )
