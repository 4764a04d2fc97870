"""Witnessing: submitting checkpoints to outside witnesses (C2SP tlog-witness v1, DESIGN §7).

For each configured witness (``AUDIT_LEDGER_WITNESSES``: submission prefix URL + cosigner
verifier key) the latest checkpoint is sent with a consistency proof from the size that witness
last cosigned (0 the first time). A 409 names the witness's own size (``text/x.tlog.size``):
the request is made once more from that size. A returned cosignature is kept only if it verifies
under the configured key (tlog-witness: "The client MUST ignore any cosignatures from unknown
keys"); it is then stored in ``checkpoint_cosignatures`` and served after the log signature.

This runs as its own scheduled job, never on the append path, with a timeout per request: a
witness that is down or slow only delays its own cosignature, and the job retries it next tick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from audit_ledger.core.cosignature import CosignerKey
from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.core.tlog_witness import (
    SIZE_CONTENT_TYPE,
    format_add_checkpoint,
    parse_cosignature_lines,
    parse_size,
)
from audit_ledger.errors import AuditLedgerError, CheckpointError
from audit_ledger.ledger.log import Log
from audit_ledger.ledger.operations import Clock
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.cosignatures import StoredCosignature
from audit_ledger.storage.store import Store

if TYPE_CHECKING:  # httpx is imported where a witness is called: most processes never do
    import httpx

log = logging.getLogger("audit_ledger.application.witnessing")

#: Outcome kinds of one submission (the ``outcome`` label of the submissions counter).
COSIGNED, UP_TO_DATE, CONFLICT, REFUSED, ERROR = (
    "cosigned",
    "up_to_date",
    "conflict",
    "refused",
    "error",
)


@dataclass(frozen=True, slots=True)
class WitnessTarget:
    """One witness: its submission prefix and cosigner verifier key."""

    url: str
    key: CosignerKey

    @property
    def ident(self) -> tuple[str, str]:
        return self.key.name, self.key.key_hash.hex()


@dataclass(frozen=True, slots=True)
class Submission:
    """What happened when the latest checkpoint went to one witness."""

    witness: str
    kind: str
    tree_size: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class WitnessLag:
    """How far one witness is behind: entries not covered by its latest cosignature, and the
    age of that cosignature (None when it never cosigned)."""

    witness: str
    cosigned_size: int
    lag_entries: int
    age_seconds: float | None


class _RefusedError(AuditLedgerError):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Witnessing:
    """Submits checkpoints to the configured witnesses and stores their cosignatures."""

    def __init__(
        self,
        store: Store,
        log_: Log,
        targets: list[WitnessTarget],
        timeout: float,
        clock: Clock,
    ) -> None:
        self.store = store
        self.log = log_
        self.targets = targets
        self.clock = clock
        # One client (keep-alive, as tlog-witness recommends), created on first use.
        self._timeout = timeout
        self._client: httpx.Client | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        import httpx  # noqa: PLC0415 - see the TYPE_CHECKING import

        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        return self._client

    def submit_latest(self) -> list[Submission]:
        """Send the latest checkpoint to every witness that has not cosigned it yet."""
        latest = self.store.latest_checkpoint()
        if latest is None or not self.targets:
            return []
        import httpx  # noqa: PLC0415 - see the TYPE_CHECKING import

        cosigned = self.store.latest_cosignatures()
        results = []
        for target in self.targets:
            previous = cosigned.get(target.ident)
            old = previous.tree_size if previous is not None else 0
            if old >= latest.tree_size:
                results.append(Submission(target.key.name, UP_TO_DATE, latest.tree_size))
                continue
            try:
                self._submit(target, latest, old, retry=True)
                kind, detail = COSIGNED, ""
            except _RefusedError as exc:
                kind, detail = exc.kind, str(exc)
            except (httpx.HTTPError, AuditLedgerError) as exc:
                # Never the response body or the URL's query: only what kind of failure.
                kind, detail = ERROR, exc.__class__.__name__
            if kind != COSIGNED:
                log.warning(
                    "witness %s did not cosign size %d: %s %s",
                    target.key.name,
                    latest.tree_size,
                    kind,
                    detail,
                )
            results.append(Submission(target.key.name, kind, latest.tree_size, detail))
        return results

    def _submit(
        self, target: WitnessTarget, checkpoint: StoredCheckpoint, old: int, *, retry: bool
    ) -> None:
        new = checkpoint.tree_size
        proof = [] if old in (0, new) else self.log.consistency_proof(old, new)
        response = self._http().post(
            target.url + "/add-checkpoint",
            content=format_add_checkpoint(old, proof, checkpoint.note),
        )
        if response.status_code == 200:
            self._store(target, checkpoint, response.content)
            return
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if response.status_code == 409 and content_type == SIZE_CONTENT_TYPE:
            size = parse_size(response.content)
            if size > new:
                # The witness cosigned a larger tree of this origin than this ledger has: another
                # view of the log exists (or this database was rolled back).
                raise _RefusedError(CONFLICT, f"witness is at size {size}, beyond this log's {new}")
            if retry and size != old:
                self._submit(target, checkpoint, size, retry=False)
                return
            raise _RefusedError(CONFLICT, f"witness refused from size {size} (a fork?)")
        raise _RefusedError(REFUSED, f"HTTP {response.status_code}")

    def _store(self, target: WitnessTarget, checkpoint: StoredCheckpoint, body: bytes) -> None:
        text = checkpoint.note[: checkpoint.note.rindex("\n\n") + 1]
        ours = [s for s in parse_cosignature_lines(body) if target.key.matches(s)]
        if not ours:
            raise CheckpointError("the witness returned no cosignature by its configured key")
        received = format_timestamp(self.clock())
        with self.store.writer() as tx:
            for sig in ours:
                cosignature = target.key.verify(text, sig)  # CheckpointError unless it verifies
                tx.insert_cosignature(
                    StoredCosignature(
                        checkpoint.tree_size,
                        target.key.name,
                        target.key.key_hash.hex(),
                        cosignature.timestamp,
                        sig.line(),
                        received,
                    )
                )

    def lag(self) -> list[WitnessLag]:
        """Per witness: log size - latest cosigned size, and that cosignature's age."""
        if not self.targets:
            return []
        size = self.store.size()
        cosigned = self.store.latest_cosignatures()
        now = time.time()
        out = []
        for target in self.targets:
            latest = cosigned.get(target.ident)
            done = latest.tree_size if latest is not None else 0
            age = max(0.0, now - latest.timestamp) if latest is not None else None
            out.append(WitnessLag(target.key.name, done, size - done, age))
        return out
