"""Bulk import's commit pipeline: batch N+1 is sealed while batch N commits.

Committing batch after batch, the importing process alternated between its own work (sealing,
hashing, building rows) and waiting for the database (COPY, commit, fsync), each idle while the
other ran. Here a thread commits batch N while the importing thread seals batch N+1 on the head
that batch N will leave (:meth:`Appender.seal_on`). Batch N+1 commits only if that prediction
still holds under the head lock (:meth:`Appender.commit_sealed`); if not — another writer
appended in between, an event id is already in the log, a data key was destroyed or used up —
it goes through the ordinary locked append, which handles each of those. The pipeline changes
how fast an import runs, never what it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from audit_ledger.errors import ConflictError, ImportStoppedError
from audit_ledger.ledger.appends.prepare import PreparedEvent
from audit_ledger.ledger.appends.write import Appender, SealedBatch
from audit_ledger.storage.entries import Head


class CommitPipeline:
    """Commits one writer's batches in order, each sealed while the one before it commits.

    Use as a context manager; :meth:`add` each batch, then :meth:`finish`. ``appended`` and
    ``already_present`` count what has committed.
    """

    def __init__(self, appender: Appender, writer: str) -> None:
        self.appender = appender
        self.writer = writer
        self.appended = 0
        self.already_present = 0
        #: the head after everything added so far (predicted while a batch is in flight)
        self._head: Head | None = None
        self._in_flight: tuple[Future[bool], SealedBatch, list[int]] | None = None
        #: whether the batch before held replays, so this one is probed for them (:meth:`add`)
        self._probing = False
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="import-commit")

    def __enter__(self) -> CommitPipeline:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        # On an error the in-flight batch still finishes (committed or not): no thread outlives
        # the import, and the caller's error is the one reported.
        self._committer.shutdown(wait=True)

    def add(self, events: Sequence[PreparedEvent], numbers: Sequence[int]) -> None:
        """Commit ``events`` (their line numbers in ``numbers``) after every earlier batch.

        Raises:
            ImportStoppedError: an event conflicts with the log; everything before it is
                committed (this batch's earlier events included), nothing after it.
        """
        sealed = None
        # Replays (a rerun after a stop) take the ordinary path. The log is probed for them
        # only while the batches before held some: a probe of a batch's ids costs about what
        # sealing it does (~1 s per 100k events on this thread, measured) and a fresh import
        # has none. A replay no probe saw (the first batch of a rerun that replays only from
        # its middle, another writer's event) makes the commit refuse the sealed batch under
        # the lock (the unique event id); the ordinary path then decides it and turns probing
        # back on. Nothing is written twice either way.
        if self._head is not None:
            if self._probing:
                ids = [e.event_id for e in events]
                self._probing = bool(self.appender.store.present_event_ids(ids))
            if not self._probing:
                sealed = self.appender.seal_on(self._head, events, self.writer)
        self._settle()
        # Sealed on the head the log has now? (Not if the batch in flight had to be redone.)
        if sealed is not None and sealed.base is self._head:
            future = self._committer.submit(self.appender.commit_sealed, sealed)
            self._in_flight = (future, sealed, list(numbers))
            self._head = sealed.after
        else:
            self._ordinary(list(events), list(numbers))

    def finish(self) -> None:
        """Wait for the batch in flight; afterwards every added batch has committed."""
        self._settle()

    def _settle(self) -> None:
        if self._in_flight is None:
            return
        future, sealed, numbers = self._in_flight
        self._in_flight = None
        if future.result():
            self.appended += len(sealed.receipts)
            return
        # The prediction failed under the lock (nothing was written): decide it the ordinary way.
        self._head = None
        self._ordinary(sealed.events, numbers)

    def _ordinary(self, events: list[PreparedEvent], numbers: list[int]) -> None:
        stop: tuple[int, str] | None = None
        while events:
            try:
                receipts, head = self.appender.append_tracked(events, self.writer)
            except ConflictError as exc:
                # Commit the events before the conflicting one, then stop at it.
                index = exc.index or 0
                stop = (numbers[index], str(exc))
                events, numbers = events[:index], numbers[:index]
                continue
            replays = sum(r.replayed for r in receipts)
            self.appended += len(receipts) - replays
            self.already_present += replays
            self._probing = replays > 0
            if head is not None:
                self._head = head
            break
        if stop is not None:
            raise ImportStoppedError(stop[0], stop[1], self.appended, self.already_present)
