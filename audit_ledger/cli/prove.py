"""``audit-ledger prove SEQ [--out FILE]``: one entry's C2SP tlog-proof bundle, from the
database (the same bundle ``GET /v1/log/proof/bundle`` serves), for ``verify-proof`` to check
offline. The leaf bytes travel in the bundle's ``extra`` line; the read is recorded."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from audit_ledger.cli.common import CLI_WRITER, EXIT_OK, CliError, _ledger
from audit_ledger.ledger.bundles import proof_bundle
from audit_ledger.ledger.identity import Principal
from audit_ledger.settings import Settings


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half a bundle."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("x", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_prove(args: argparse.Namespace, settings: Settings) -> int:
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
