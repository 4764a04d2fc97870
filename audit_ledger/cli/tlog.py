"""Transparency-log commands that need the ledger's database and keys:

* ``audit-ledger prove SEQ [--out FILE]``: one entry's C2SP tlog-proof bundle (the same bundle
  ``GET /v1/log/proof/bundle`` serves), for ``verify-proof`` to check offline. The leaf bytes
  travel in the bundle's ``extra`` line; the read is recorded.
* ``audit-ledger keys rotate-checkpoint [--finish]``: checkpoint-key rotation
  (:mod:`audit_ledger.ledger.checkpoint_rotation`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit_ledger.cli.common import CLI_WRITER, EXIT_OK, CliError, _ledger
from audit_ledger.durable import write_atomically

if TYPE_CHECKING:
    from audit_ledger.settings import Settings


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half a bundle."""
    try:
        write_atomically(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_prove(args: argparse.Namespace, settings: Settings) -> int:
    # Here: the proof machinery (the whole log use case) is for this command only (issue #16).
    from audit_ledger.ledger.bundles import proof_bundle  # noqa: PLC0415
    from audit_ledger.ledger.identity import Principal  # noqa: PLC0415

    with _ledger(settings) as ledger:
        principal = Principal(CLI_WRITER, frozenset())
        bundle = proof_bundle(ledger.log, principal, args.seq, "cli prove")
    if args.out is None:
        sys.stdout.write(bundle)
    else:
        _write_atomically(Path(args.out), bundle)
        print(f"wrote the proof bundle of seq {args.seq} to {args.out}", file=sys.stderr)
    return EXIT_OK


def _seq(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError("must be a non-negative integer")
    return int(text)


def add_prove(sub: Any) -> None:
    parser = sub.add_parser(
        "prove",
        help="write an entry's tlog-proof bundle (for 'verify-proof')",
        description="Write the c2sp.org/tlog-proof@v1 bundle of entry SEQ against the latest "
        "checkpoint (with every witness cosignature the ledger holds): leaf bytes (extra line), "
        "index, inclusion proof and the checkpoint. Recorded as a read of that entry.",
    )
    parser.add_argument("seq", type=_seq, help="the entry's seq")
    parser.add_argument("--out", help="file to write (default: standard output); .tlog-proof")
    parser.set_defaults(func=cmd_prove)


def cmd_keys_rotate_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        rotation = ledger.checkpoint_rotation
        report = rotation.finish() if args.finish else rotation.start()
    size = report.checkpoint.tree_size if report.checkpoint is not None else 0
    if args.finish:
        print(
            f"checkpoint-key rotation finished (recorded at seq {report.recorded_seq}): "
            f"checkpoints from tree size {size} are signed by the new key alone; the old "
            "private key is deleted, its verifier key stays in checkpoint-keys.history",
            file=sys.stderr,
        )
    else:
        print(
            f"checkpoint-key rotation started (recorded at seq {report.recorded_seq}): "
            f"checkpoints from tree size {size} are signed by both keys until "
            "'audit-ledger keys rotate-checkpoint --finish'; publish the new verifier key:",
            file=sys.stderr,
        )
    print(report.new_key)
    return EXIT_OK


def add_keys_rotate_checkpoint(keys: Any) -> None:
    parser = keys.add_parser(
        "rotate-checkpoint",
        help="new checkpoint signing key; both keys sign until --finish",
        description="Start a checkpoint-key rotation: a new key signs checkpoints alongside the "
        "old one (a transition window in which verifiers knowing either key accept them); "
        "with --finish, the old key stops signing and its private key is deleted. Both steps "
        "are recorded in ledger_operations and followed by a checkpoint. Every old checkpoint "
        "stays verifiable: 'verify' uses keys/checkpoint-keys.history, auditors list old and new "
        "keys (repeated --verifier-key, or 'log' lines of a tlog-policy). Prints the new "
        "verifier key.",
    )
    parser.add_argument("--finish", action="store_true", help="end the transition window")
    parser.set_defaults(func=cmd_keys_rotate_checkpoint)
