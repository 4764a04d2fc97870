"""The auditor's commands: ``audit`` (over HTTP, or ``--offline`` on the mirror) and ``export``
(the database's leaves into a mirror, recorded as a read)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit_ledger.auditor import DEFAULT_INCLUSION_CHECKS
from audit_ledger.cli.common import (
    AUDIT_TOKEN_ENV,
    CLI_WRITER,
    EXIT_OK,
    EXIT_TAMPERED,
    CliError,
    _ledger,
)
from audit_ledger.errors import CoreError

if TYPE_CHECKING:
    from audit_ledger.auditor.mirror import Mirror
    from audit_ledger.auditor.monitor import AuditReport, Trust
    from audit_ledger.settings import Settings

# Every command module is imported to build the parser: the mirror, the monitor, the trust
# files' parsing and the export check (with asyncio and the cryptography behind them) are
# imported by the commands that use them (PLC0415), and every other command starts faster
# (issue #16).


def _read_small_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the {what} file: {exc}") from None


def _audit_trust(args: argparse.Namespace) -> Trust:
    """``--policy`` (a tlog-policy file), or one or more verifier keys (a key history)."""
    from audit_ledger.auditor.trust import trust_from  # noqa: PLC0415

    return trust_from(args.verifier_key or (), args.verifier_key_file or (), args.policy)


def _audit_token(args: argparse.Namespace) -> str:
    # Never from the command line, where every user of the machine could read it (ps).
    token = (
        _read_small_file(args.token_file, "token")
        if args.token_file
        else os.environ.get(AUDIT_TOKEN_ENV, "").strip()
    )
    if not token:
        raise CliError(f"an auditor token is needed: --token-file or {AUDIT_TOKEN_ENV}")
    return token


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    verifier = _audit_trust(args)
    if args.offline == bool(args.url):
        raise CliError("give either --url (check the server) or --offline (check the mirror)")

    from audit_ledger.auditor.monitor import audit_server, verify_mirror  # noqa: PLC0415

    def run(mirror: Mirror) -> AuditReport:
        if args.offline:
            return verify_mirror(mirror, verifier)

        async def online() -> AuditReport:
            # httpx only for this command: every other command starts faster without it.
            from audit_ledger.client import AuditLedgerClient  # noqa: PLC0415

            async with AuditLedgerClient(
                args.url, _audit_token(args), max_retries=args.retries
            ) as client:
                return await audit_server(
                    client, mirror, verifier, inclusion_checks=args.inclusion_checks
                )

        import asyncio  # noqa: PLC0415

        return asyncio.run(online())

    return _report_audit(args, Path(args.mirror), run, create=not args.offline)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    if not args.mirror:  # optional in the parser only because of ``export records``
        raise CliError("the following arguments are required: --mirror (see --help)")
    with _ledger(settings) as ledger:

        def run(mirror: Mirror) -> AuditReport:
            return ledger.export(
                mirror, inclusion_checks=args.inclusion_checks, principal=CLI_WRITER
            )

        return _report_audit(args, Path(args.mirror), run, create=True)


def _report_audit(
    args: argparse.Namespace, directory: Path, run: Callable[[Mirror], AuditReport], *, create: bool
) -> int:
    """Run an audit on the locked mirror and print its outcome; exit 1 on a contradiction."""
    from audit_ledger.auditor.mirror import open_mirror  # noqa: PLC0415
    from audit_ledger.auditor.monitor import AuditFailedError  # noqa: PLC0415

    try:
        with open_mirror(directory, create=create) as mirror:
            report = run(mirror)
    except AuditFailedError as exc:
        if args.json:
            print(json.dumps({"ok": False, "problem": str(exc)}, sort_keys=True))
        print(f"AUDIT FAILED: {exc}", file=sys.stderr)
        return EXIT_TAMPERED
    if args.json:
        print(json.dumps({"ok": True, **report.to_dict()}, sort_keys=True))
    elif getattr(args, "offline", False):
        print(
            f"ok: the mirror's {report.tree_size} leaves match its checkpoint, "
            f"root {report.root_hash}"
        )
    else:
        print(
            f"ok: checkpoint of {report.tree_size} entries, root {report.root_hash}; "
            f"{report.new_leaves} new leaves verified since {report.previous_size}, "
            f"{report.inclusion_proofs} inclusion proofs"
            + (", consistency proof" if report.consistency_proof else "")
        )
    return EXIT_OK


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a non-negative integer")
    return int(text)


def mirror_options(parser: argparse.ArgumentParser, func: Callable[..., int]) -> None:
    """What ``audit`` and ``export`` share: the mirror, the proofs sampled, the report."""
    parser.add_argument("--mirror", required=True, help="directory of the auditor's mirror")
    parser.add_argument(
        "--inclusion-checks",
        type=count,
        default=DEFAULT_INCLUSION_CHECKS,
        help="inclusion proofs to check among the new leaves (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=func)


def cmd_verify_proof(args: argparse.Namespace, settings: Settings) -> int:
    """Check a tlog-proof bundle offline: exit 0 proven, 1 not proven (one line why)."""
    from audit_ledger.auditor.trust import trust_from, verify_proof_file  # noqa: PLC0415

    policy = trust_from(args.verifier_key or (), args.verifier_key_file or (), args.policy)
    try:
        proven = verify_proof_file(args.file, policy, args.leaf)
    except CoreError as exc:
        print(f"PROOF FAILED: {exc}", file=sys.stderr)
        return EXIT_TAMPERED
    cosigners = ", ".join(sorted(proven.verified.cosigners)) or "no witness"
    print(
        f"ok: entry {proven.index} is in {proven.checkpoint.origin} at tree size "
        f"{proven.checkpoint.size}, root {proven.checkpoint.root_hash.hex()}, signed by "
        f"{proven.verified.log_key.encode()}, cosigned by {cosigners}; leaf sha256 "
        f"{hashlib.sha256(proven.leaf).hexdigest()}"
    )
    return EXIT_OK


def trust_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """How an auditor says what it trusts: verifier keys (repeat for a key history across a
    checkpoint-key rotation) or a C2SP tlog-policy file (log keys and a witness quorum)."""
    key = parser.add_mutually_exclusive_group(required=required)
    key.add_argument(
        "--verifier-key",
        action="append",
        help="a published checkpoint verifier key (name+hash+key); repeat for a key history",
    )
    key.add_argument(
        "--verifier-key-file",
        action="append",
        help="a file holding verifier keys, one per line",
    )
    key.add_argument(
        "--policy",
        help="a C2SP tlog-policy file: log keys ('log' lines, a key history) and the witness "
        "quorum the checkpoint must meet",
    )


def add_verify_proof(sub: Any) -> None:
    """``audit-ledger verify-proof FILE --policy POLICY``."""
    parser = sub.add_parser(
        "verify-proof",
        help="check a tlog-proof bundle offline against a policy",
        description="Check a c2sp.org/tlog-proof@v1 bundle (from 'prove' or GET "
        "/v1/log/proof/bundle) with no network: the checkpoint is signed by a log key of the "
        "policy and meets its witness quorum, and the inclusion proof leads from the entry's "
        "leaf bytes to the checkpoint's root. Exit 0 proven, 1 not proven (one line why), "
        "2 usage or unreadable input.",
    )
    parser.add_argument("file", help="the bundle (.tlog-proof)")
    parser.add_argument(
        "--leaf", help="the entry's leaf bytes, for a bundle without them (extra line)"
    )
    trust_options(parser, required=True)
    parser.set_defaults(func=cmd_verify_proof)


def cmd_verify_export(args: argparse.Namespace, settings: Settings) -> int:
    """Check a regulator export offline: exit 0 proven, 1 not (one line why)."""
    from audit_ledger.auditor.export_check import verify_export  # noqa: PLC0415
    from audit_ledger.auditor.trust import trust_from  # noqa: PLC0415

    policy = trust_from(args.verifier_key or (), args.verifier_key_file or (), args.policy)
    manifest = Path(args.manifest) if args.manifest else None
    try:
        report = verify_export(Path(args.file), manifest, policy)
    except CoreError as exc:
        print(f"EXPORT CHECK FAILED: {exc}", file=sys.stderr)
        return EXIT_TAMPERED
    checkpoint = report.verified.checkpoint
    cosigners = ", ".join(sorted(report.verified.cosigners)) or "no witness"
    print(
        f"ok: {report.records} {report.data_format} records are entries of "
        f"{checkpoint.origin} at tree size {checkpoint.size}, root "
        f"{checkpoint.root_hash.hex()}, signed by {report.verified.log_key.encode()}, "
        f"cosigned by {cosigners}; headers proven, plaintext data as decrypted by the service"
    )
    return EXIT_OK


def add_verify_export(sub: Any) -> None:
    """``audit-ledger verify-export FILE [--manifest M] --verifier-key K``."""
    parser = sub.add_parser(
        "verify-export",
        help="check a regulator export (export records) offline",
        description="Check an export from 'export records' or the console with no network: "
        "the manifest's checkpoint is signed by a trusted key (and meets a policy's witness "
        "quorum), every record's leaf is proven in it by its inclusion proof, every record's "
        "seq, leaf hash and header are that leaf's, and the data file is the one the manifest "
        "was written with. Plaintext data is not covered by the log (it commits to the "
        "ciphertext). Exit 0 proven, 1 not proven (one line why), 2 usage or unreadable input.",
    )
    parser.add_argument("file", help="the data file (.csv or .jsonl)")
    parser.add_argument("--manifest", help="the manifest (default: FILE.manifest)")
    trust_options(parser, required=True)
    parser.set_defaults(func=cmd_verify_export)
