"""``audit-ledger export records``: a regulator export for scripts (issue #14 item 2), the
same use case as the console's download buttons (:mod:`audit_ledger.ledger.record_exports`).

Writes FILE and its manifest (FILE.manifest unless --manifest) atomically: both go to
temporary files beside their targets and are renamed only when the export is complete, so a
failed or refused export leaves nothing behind. The export is a recorded read by the CLI's
principal, ``cli``, with the roles given by ``--role`` (what a role may read is the policy's).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from audit_ledger.cli.common import CLI_WRITER, EXIT_OK, CliError, _ledger
from audit_ledger.roles import AUDITOR, ROLES

if TYPE_CHECKING:
    from audit_ledger.settings import Settings

ENDPOINT = "cli export records"
MANIFEST_SUFFIX = ".manifest"


@contextlib.contextmanager
def _atomic(target: Path) -> Iterator[IO[bytes]]:
    """A file that becomes ``target`` (mode 0600: it may hold plaintext) only on success."""
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise CliError(f"cannot write {target.name}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        Path(temp).replace(target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def cmd_export_records(args: argparse.Namespace, settings: Settings) -> int:
    from audit_ledger.ledger.identity import Principal  # noqa: PLC0415
    from audit_ledger.ledger.reads import Query  # noqa: PLC0415

    out = Path(args.out)
    manifest = Path(args.manifest) if args.manifest else out.with_name(out.name + MANIFEST_SUFFIX)
    if out.resolve() == manifest.resolve():
        raise CliError("--manifest must name another file than --out")
    q = Query(
        args.category,
        args.event_type,
        args.since,
        args.until,
        recorded_since=args.recorded_since,
        recorded_until=args.recorded_until,
    )
    principal = Principal(CLI_WRITER, frozenset(args.role or [AUDITOR]))
    with _ledger(settings) as ledger, _atomic(out) as data, _atomic(manifest) as proofs:
        summary = ledger.record_exports.write(principal, q, ENDPOINT, args.format, data, proofs)
    print(
        f"ok: {summary.records} records exported to {out.name} ({summary.data_format}), "
        f"proven against the checkpoint of {summary.tree_size} entries in {manifest.name}; "
        f"data sha256 {summary.data_sha256}"
    )
    return EXIT_OK


def add_export_records(export: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``export records`` under the ``export`` command (whose own form is ``--mirror``)."""
    sub = export.add_subparsers(dest="what", required=False, parser_class=parser_class)
    records = sub.add_parser(
        "records",
        help="the records a role may read, as CSV or JSON Lines with an offline-checkable manifest",
        description="Export the records matching the filters that ROLE may read (plaintext "
        "for the category's readers, headers only for the auditor) below the latest "
        "checkpoint, to FILE, with FILE.manifest holding the cosigned checkpoint and every "
        "record's inclusion proof: 'audit-ledger verify-export FILE --verifier-key K' checks "
        "them offline. CSV cells that a spreadsheet would run as a formula (starting with =, "
        "+, -, @, tab or CR) are written with a leading '. The export is a recorded read.",
    )
    records.add_argument("--category", help="one category (default: every one ROLE may see)")
    records.add_argument("--event-type")
    records.add_argument("--since", help="RFC 3339 lower bound on occurred_at")
    records.add_argument("--until", help="RFC 3339 upper bound on occurred_at")
    records.add_argument("--recorded-since", help="RFC 3339 lower bound on recorded_at")
    records.add_argument("--recorded-until", help="RFC 3339 upper bound on recorded_at")
    records.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    records.add_argument("--out", required=True, help="the data file to write")
    records.add_argument("--manifest", help="the manifest file (default: OUT.manifest)")
    records.add_argument(
        "--role",
        action="append",
        choices=sorted(ROLES),
        help="read as this role (repeatable; default: auditor, headers only)",
    )
    records.set_defaults(func=cmd_export_records)
