"""The ``add-checkpoint`` state machine of C2SP tlog-witness v1.

Checks, in the order of the spec's "add-checkpoint" section, each with its own error (the HTTP
shell maps them to the spec's status codes; domain errors carry none):

1. framing of the body (:class:`MalformedRequestError`);
2. the origin is a configured log (:class:`UnknownLogError`);
3. at least one signature verifies under a trusted key of that origin, signatures by unknown
   keys ignored (:class:`LogSignatureError`);
4. old size <= checkpoint size (:class:`MalformedRequestError`);
5. old size = the size of the latest cosigned checkpoint, 0 if none (:class:`SizeConflictError`,
   carrying the witness's size for the ``text/x.tlog.size`` body);
6. old size = checkpoint size: the root hashes must be equal (:class:`SizeConflictError`);
   otherwise the RFC 6962 §2.1.2 consistency proof from the stored root must verify, and it must
   be empty when the old size is 0 (:class:`InconsistentProofError`).

Then the checkpoint is stored and cosigned in one transaction (compare-and-swap per origin).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from audit_ledger.core import merkle
from audit_ledger.core.checkpoint import Checkpoint, open_note, parse_checkpoint_body, split_note
from audit_ledger.core.tlog_witness import parse_add_checkpoint
from audit_ledger.errors import AuditLedgerError, CheckpointError, ProofError
from audit_ledger.witness.keys import WitnessSigner
from audit_ledger.witness.state import StateTx, WitnessState

log = logging.getLogger("audit_ledger.witness")


class WitnessError(AuditLedgerError):
    """A refused ``add-checkpoint`` request."""


class MalformedRequestError(WitnessError):
    """The body is not an add-checkpoint request, or its old size exceeds the checkpoint's."""


class UnknownLogError(WitnessError):
    """The checkpoint's origin is not a log this witness trusts."""


class LogSignatureError(WitnessError):
    """No signature on the checkpoint verifies under a trusted key of its log."""


class SizeConflictError(WitnessError):
    """The old size is not the witness's latest size, or the same size has another root."""

    def __init__(self, detail: str, size: int) -> None:
        super().__init__(detail)
        self.size = size


class ForkError(SizeConflictError):
    """The checkpoint has the witness's latest size but another root hash."""


class InconsistentProofError(WitnessError):
    """The consistency proof does not verify from the witness's latest checkpoint."""


def _signed_by_trusted_key(note: str, tx: StateTx, origin: str) -> None:
    verifiers = tx.log_keys(origin)
    if not verifiers:
        raise UnknownLogError("unknown log origin")
    for verifier in verifiers:
        try:
            open_note(note, verifier)
        except CheckpointError:
            continue
        return
    raise LogSignatureError("no signature verifies under a trusted key of this log")


class Witness:
    """Verifies submitted checkpoints against the stored state and cosigns consistent ones."""

    def __init__(
        self, state: WitnessState, signer: WitnessSigner, clock: Callable[[], float] = time.time
    ) -> None:
        self.state = state
        self.signer = signer
        self.clock = clock

    def add_checkpoint(self, body: bytes) -> str:
        """Handle one request body; return the cosignature line(s) or raise a WitnessError."""
        try:
            request = parse_add_checkpoint(body)
            text, _ = split_note(request.note)
            checkpoint = parse_checkpoint_body(text)
        except CheckpointError as exc:
            raise MalformedRequestError(f"malformed add-checkpoint request: {exc}") from None
        try:
            with self.state.transaction() as tx:
                _signed_by_trusted_key(request.note, tx, checkpoint.origin)
                if request.old_size > checkpoint.size:
                    raise MalformedRequestError("old size is larger than the checkpoint size")
                self._check_consistent(tx, checkpoint, request.old_size, request.proof)
                cosignature = self.signer.cosign(text, int(self.clock()))
                tx.store(checkpoint.origin, checkpoint.size, checkpoint.root_hash, request.note)
        except (ForkError, InconsistentProofError) as exc:
            # Correctly signed yet refused: possible evidence of a fork or a rollback.
            log.warning(
                "refused checkpoint origin=%s old=%d size=%d: %s",
                checkpoint.origin,
                request.old_size,
                checkpoint.size,
                exc,
            )
            reason = exc.__class__.__name__
            self.state.record_refusal(
                checkpoint.origin, reason, request.old_size, checkpoint.size, request.note
            )
            raise
        log.info("cosigned origin=%s size=%d", checkpoint.origin, checkpoint.size)
        return cosignature.line()

    @staticmethod
    def _check_consistent(
        tx: StateTx, checkpoint: Checkpoint, old_size: int, proof: tuple[bytes, ...]
    ) -> None:
        latest = tx.latest(checkpoint.origin)
        latest_size = latest.size if latest is not None else 0
        if old_size != latest_size:
            raise SizeConflictError("old size is not the witness's latest size", latest_size)
        if latest is None or old_size == 0:
            if proof:
                raise InconsistentProofError("the proof must be empty when the old size is 0")
            return
        if old_size == checkpoint.size and latest.root_hash != checkpoint.root_hash:
            raise ForkError("same size, different root hash (a fork)", latest_size)
        try:
            merkle.verify_consistency(
                old_size, checkpoint.size, latest.root_hash, checkpoint.root_hash, proof
            )
        except ProofError:
            raise InconsistentProofError("consistency proof does not verify") from None
