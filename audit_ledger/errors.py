"""One base error per layer (sigstore-python style).

Parsers never leak ``ValueError``/``KeyError``: they raise their layer's error. Domain errors
carry no HTTP status; the API maps them in one place.
"""

from __future__ import annotations


class AuditLedgerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(AuditLedgerError):
    """Settings, policy or key files are missing or malformed."""


class CoreError(AuditLedgerError):
    """Base of the pure ``core`` layer's errors."""


class FormatError(CoreError):
    """Bytes or values that are not valid ledger format v1 (leaf, timestamp, canonical JSON)."""


class ProofError(CoreError):
    """A Merkle proof request is out of range or a proof does not verify."""


class CheckpointError(CoreError):
    """A checkpoint or signed note is malformed or its signature does not verify."""


class PolicyError(CheckpointError):
    """A checkpoint does not satisfy a tlog-policy (no trusted log signature, or a group of
    witnesses lacks its quorum)."""


class QuorumError(PolicyError):
    """A checkpoint lacks the witness cosignatures a tlog-policy's quorum asks for."""


class PolicySyntaxError(CoreError):
    """A tlog-policy file is malformed (the message names the line)."""


class BundleError(CoreError):
    """A tlog-proof bundle is malformed or does not prove its entry."""


class CryptoError(AuditLedgerError):
    """Base of the ``crypto`` layer's errors (authentication failures, bad keys)."""


class ExternalKeyMissingError(CryptoError):
    """A data key kept in the key store is gone (erased), though a database row still names it
    (e.g. a database backup restored after the erasure)."""


class StorageError(AuditLedgerError):
    """Base of the ``storage`` layer's errors."""


class DuplicateEntryError(StorageError):
    """An insert met an existing entry (same seq or event_id): the transaction must roll back."""


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached; the caller may retry later."""


class LedgerError(AuditLedgerError):
    """Base of the use-case layer's errors."""


class ValidationError(LedgerError):
    """An event or request is invalid. ``fields`` names the failing fields, never their values."""

    def __init__(self, detail: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields or []


class ConflictError(LedgerError):
    """An ``event_id`` was reused with different content. ``index`` is its place in the batch."""

    def __init__(self, detail: str, index: int | None = None) -> None:
        super().__init__(detail)
        self.index = index


class ImportStoppedError(LedgerError):
    """A bulk import stopped at a bad line or a conflict; the lines before it are committed."""

    def __init__(self, line: int, detail: str, appended: int, already_present: int) -> None:
        super().__init__(
            f"line {line}: {detail} (committed before it: {appended}, "
            f"already present: {already_present})"
        )
        self.line = line
        self.appended = appended
        self.already_present = already_present


class ImportInterruptedError(LedgerError):
    """The database connection was lost during a bulk import. Whole batches from the start of
    the input committed — at least ``appended`` lines (the batch whose commit was cut off may
    have committed too) — and rerunning the same input finishes it (appends are idempotent)."""

    def __init__(self, appended: int, already_present: int) -> None:
        super().__init__(
            "the database connection was lost during the import (committed before it: at "
            f"least {appended}, already present: {already_present}); rerunning the same "
            "input is safe and finishes it"
        )
        self.appended = appended
        self.already_present = already_present


class PayloadTooLargeError(LedgerError):
    """A request body or batch is over the configured limit."""


class RefusedError(LedgerError):
    """The policy forbids the request (e.g. erasing records kept by law)."""


class NotFoundError(LedgerError):
    """The requested entry, checkpoint or object does not exist."""


class PermissionDeniedError(LedgerError):
    """The principal is authenticated but its roles do not allow the action."""


class AuthenticationError(LedgerError):
    """No valid credentials were presented."""


class ChainBrokenError(CoreError):
    """Verification found the log inconsistent. ``seq`` is the first bad entry (or None)."""

    def __init__(self, seq: int | None, reason: str) -> None:
        where = f"seq {seq}" if seq is not None else "log"
        super().__init__(f"{where}: {reason}")
        self.seq = seq
        self.reason = reason
