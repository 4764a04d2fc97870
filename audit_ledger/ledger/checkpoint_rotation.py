"""Checkpoint-key rotation as a use case: the key files change (see
:mod:`audit_ledger.crypto.checkpoint_keys`), the change is recorded in the chain as a
``ledger_operations`` entry, and a checkpoint is signed at once so the new signature is out:

* ``start`` → ``checkpoint_key_rotation_started`` ``{actor, old_key, new_key}``; the checkpoint
  that follows carries both signatures (the transition window);
* ``finish`` → ``checkpoint_key_rotation_finished`` ``{actor, retired_key, key}``; checkpoints
  from then on carry the new signature alone.

The record holds public verifier keys only. As for KEK rotation, the files change first and the
record follows: the record never claims a key that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audit_ledger.crypto.checkpoint_keys import CheckpointKeys, finish_rotation, start_rotation
from audit_ledger.ledger.log import Log
from audit_ledger.ledger.operations import Operations
from audit_ledger.storage.checkpoints import StoredCheckpoint


@dataclass(frozen=True, slots=True)
class RotationReport:
    old_key: str
    new_key: str
    recorded_seq: int
    checkpoint: StoredCheckpoint | None


class CheckpointRotation:
    """Start and finish a checkpoint-key rotation, each recorded as an operation."""

    def __init__(
        self, keys_dir: Path, keys: CheckpointKeys, log: Log, operations: Operations
    ) -> None:
        self.keys_dir = keys_dir
        self.keys = keys
        self.log = log
        self.operations = operations

    def start(self, *, actor: str = "cli") -> RotationReport:
        old, new = start_rotation(self.keys_dir)
        receipt = self.operations.record(
            "checkpoint_key_rotation_started",
            {"actor": actor, "old_key": old.encode(), "new_key": new.encode()},
        )
        return RotationReport(old.encode(), new.encode(), receipt.seq, self.log.checkpoint())

    def finish(self, *, actor: str = "cli") -> RotationReport:
        retired, current = finish_rotation(self.keys_dir)
        receipt = self.operations.record(
            "checkpoint_key_rotation_finished",
            {"actor": actor, "retired_key": retired.encode(), "key": current.encode()},
        )
        return RotationReport(
            retired.encode(), current.encode(), receipt.seq, self.log.checkpoint()
        )
