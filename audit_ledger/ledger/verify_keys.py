"""The data-key half of a full verification: every ``data_keys`` row well-formed, every destroyed
key recorded by a retention run or erasure, and (with the KEK) every live key still unwrapping.

It is independent of the entries pass — it reads only ``data_keys`` and the kinds of the entries
that destroyed keys — and on a ledger with many data subjects it costs as much as that pass (a
subject key is a file of its own: 20,000 subjects are 20,000 file reads and unwraps). So a
parallel verification runs it in a thread beside the entries pass (:class:`KeyChecks` with
``background=True``), where it mostly waits on files and the database while the worker
processes check entries; a verification in one process runs it inline. Either way its verdict
is taken at the same point of the verification, so the first problem reported is the same.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from audit_ledger.crypto.keys import KeyProvider
from audit_ledger.errors import CryptoError
from audit_ledger.ledger.verify_entries import PURGE_OPERATION, fail
from audit_ledger.ledger.verify_rows import RowSource, check_key_rows
from audit_ledger.policy import LEDGER_OPERATIONS
from audit_ledger.storage.keys import StoredKey

#: Threads unwrapping keys: each unwrap of a subject key is mostly a file read.
UNWRAP_THREADS = 4
#: Keys handed to those threads at a time.
UNWRAP_SLICE = 1024


class KeySource(RowSource, Protocol):
    def iter_keys(self) -> Iterator[StoredKey]: ...

    def kinds_of(self, seqs: Sequence[int]) -> dict[int, tuple[str, str]]: ...


class KeyChecks:
    """Check the data keys now in a thread (``background``) or when :meth:`result` is called;
    :meth:`result` returns how many keys were checked or raises what the checks found."""

    def __init__(self, store: KeySource, provider: KeyProvider | None, *, background: bool) -> None:
        self.store = store
        self.provider = provider
        self._outcome: int | BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="verify-keys", daemon=True)
            self._thread.start()

    def result(self) -> int:
        if self._thread is None:
            self._run()
        else:
            self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None  # noqa: S101 - _run always sets it
        return outcome

    def _run(self) -> None:
        try:
            self._outcome = self._check()
        except BaseException as exc:  # noqa: BLE001 - handed to result(), raised there
            self._outcome = exc

    def _check(self) -> int:
        check_key_rows(self.store)  # types and forms first: what follows relies on them
        destroyed_by: dict[int, str] = {}
        count = 0
        with ThreadPoolExecutor(UNWRAP_THREADS, thread_name_prefix="verify-unwrap") as pool:
            # A slice of keys at a time (so as many futures at most), each in the keys' order,
            # as one loop did before the unwraps ran in threads: the first key with a problem
            # is the one reported.
            keys = iter(self.store.iter_keys())
            while part := list(itertools.islice(keys, UNWRAP_SLICE)):
                count += len(part)
                live = [k for k in part if k.wrapped is not None and self.provider is not None]
                unwrapped = pool.map(self._unwrap, live)
                for key in part:
                    if key.wrapped is None:
                        if key.destroyed_by_seq is None:
                            raise fail("destroyed with no recording entry", key_id=key.key_id)
                        destroyed_by[key.destroyed_by_seq] = key.key_id
                    elif self.provider is not None and (problem := next(unwrapped)) is not None:
                        raise fail(problem, key_id=key.key_id)
        kinds = self.store.kinds_of(sorted(destroyed_by))
        for seq, key_id in destroyed_by.items():
            category, event_type = kinds.get(seq, ("", ""))
            if category != LEDGER_OPERATIONS or event_type not in PURGE_OPERATION.values():
                raise fail(
                    "destruction record is not a retention run or erasure entry", key_id=key_id
                )
        return count

    def _unwrap(self, key: StoredKey) -> str | None:
        if self.provider is None or key.wrapped is None:  # pragma: no cover - live keys only
            return None
        try:
            self.provider.unwrap(key.key_id, key.wrapped, key.kek_id)
        except CryptoError as exc:
            return str(exc)
        return None
