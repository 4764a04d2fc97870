"""The ``audit-ledger`` command line: a thin shell over the ledger service.

Exit codes: 0 success (for ``verify``: intact), 1 tampering or inconsistency found, 2 usage,
configuration, input or database error. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from audit_ledger.auditor.mirror import Mirror, open_mirror
from audit_ledger.auditor.monitor import (
    DEFAULT_INCLUSION_CHECKS,
    AuditFailedError,
    AuditReport,
    audit_server,
    verify_mirror,
)
from audit_ledger.auditor.sources import LedgerSource
from audit_ledger.client import AuditLedgerClient
from audit_ledger.core.checkpoint import Verifier, parse_verifier_key
from audit_ledger.crypto.keys import init_keys
from audit_ledger.errors import (
    AuditLedgerError,
    CheckpointError,
    DatabaseUnavailableError,
    ImportStoppedError,
)
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability.logging import configure_logging
from audit_ledger.roles import ROLES
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage import migrations
from audit_ledger.storage.database import translate_errors
from audit_ledger.storage.engine import create_engine_for_url
from audit_ledger.storage.grants import grant_statements

EXIT_OK, EXIT_TAMPERED, EXIT_ERROR = 0, 1, 2
CLI_WRITER = "cli"
#: Parsing and validation run in this many processes at most: beyond that the committing
#: process is the bottleneck.
MAX_IMPORT_JOBS = 4
PARALLEL_IMPORT_MIN_BYTES = 4 * 1024 * 1024
#: Where ``audit`` finds the auditor's token when no --token-file is given.
AUDIT_TOKEN_ENV = "AUDIT_LEDGER_TOKEN"  # noqa: S105 - the variable's name, not a secret


class CliError(Exception):
    """A one-line error for the user; exit code 2."""


def _err(message: str) -> None:
    print(f"audit-ledger: error: {message}", file=sys.stderr)


@contextmanager
def _ledger(settings: Settings) -> Iterator[Ledger]:
    ledger = Ledger.open(settings)
    try:
        ledger.check_schema()
        yield ledger
    finally:
        ledger.close()


# --- commands ------------------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace, settings: Settings) -> int:
    keys_dir = Path(args.keys_dir) if args.keys_dir else settings.keys_dir
    origin = args.origin or settings.checkpoint_origin
    verifier = init_keys(keys_dir, origin)
    print(
        f"created key files in {keys_dir} (mode 0600); keep them out of the database backups",
        file=sys.stderr,
    )
    print("checkpoint verifier key (publish it for auditors):", file=sys.stderr)
    print(verifier.encode())
    return EXIT_OK


def cmd_keys_rotate_kek(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        retired, report = ledger.rotate_kek()
    print(
        f"new key-encryption key {report.kek_id}; {report.rewrapped} data keys re-wrapped"
        + (f", {report.missing} already erased" if report.missing else ""),
        file=sys.stderr,
    )
    print(
        f"the old one ({retired}) stays in {settings.keys_dir / 'retired-keks'} until every "
        "process started before now has been restarted; then run "
        "'audit-ledger keys prune-keks'",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_keys_prune_keks(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        report, removed, kept = ledger.prune_keks()
    if report.rewrapped:
        print(f"{report.rewrapped} data keys re-wrapped by {report.kek_id}", file=sys.stderr)
    for kek_id in removed:
        print(f"removed retired key-encryption key {kek_id}", file=sys.stderr)
    for kek_id in kept:
        print(f"kept {kek_id}: data keys still need it", file=sys.stderr)
    if not removed and not kept:
        print("no retired key-encryption keys", file=sys.stderr)
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    engine = create_engine_for_url(settings.database_url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    print(f"database migrated to revision {migrations.head_revision()}", file=sys.stderr)
    return EXIT_OK


def cmd_db_grants(args: argparse.Namespace, settings: Settings) -> int:
    statements = grant_statements(args.role)
    if not args.apply:
        for statement in statements:
            print(statement + ";")
        return EXIT_OK
    engine = create_engine_for_url(settings.database_url)
    try:
        if engine.dialect.name != "postgresql":
            raise CliError("grants apply to PostgreSQL only (SQLite has no roles)")
        with translate_errors(), engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()
    print(f"applied {len(statements)} grant statements for role {args.role}", file=sys.stderr)
    return EXIT_OK


def _import_jobs(source: str) -> int:
    """Worker processes for an import: one per core for a large file, none for a small one or
    a stream (starting them costs about as much as validating a few thousand lines)."""
    try:
        large = source != "-" and Path(source).stat().st_size >= PARALLEL_IMPORT_MIN_BYTES
    except OSError:
        large = False  # reported when the file is opened
    return min(os.cpu_count() or 1, MAX_IMPORT_JOBS) if large else 1


def _read_lines(source: str) -> Iterator[tuple[int, str]]:
    stream: IO[str]
    if source == "-":
        stream = sys.stdin
    else:
        try:
            stream = Path(source).open(encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CliError(f"cannot read {source}: {exc.strerror}") from None
    try:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield number, line
    except UnicodeDecodeError:
        raise CliError(f"{source}: not UTF-8 text") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def cmd_append(args: argparse.Namespace, settings: Settings) -> int:
    """Append JSON lines in batches; a bad line stops the import after committing the lines
    before it. Rerunning the corrected file is safe: appends are idempotent by event_id."""
    jobs = args.jobs if args.jobs is not None else _import_jobs(args.file)
    with _ledger(settings) as ledger:
        try:
            result = ledger.import_lines(
                _read_lines(args.file), args.writer, batch_size=args.batch_size, jobs=jobs
            )
        except ImportStoppedError as exc:
            raise CliError(str(exc)) from None
    print(json.dumps({"appended": result.appended, "already_present": result.already_present}))
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        checkpoint = ledger.checkpoint()
    if checkpoint is None:
        raise CliError("the log is empty: no checkpoint is made for an empty log")
    sys.stdout.write(checkpoint.note)
    return EXIT_OK


def _progress_printer() -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(done: int) -> None:
        print(f"\rverified {done:,} entries", end="", file=sys.stderr, flush=True)

    return show


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        progress = None if args.json else _progress_printer()
        report = ledger.verify(progress, jobs=args.jobs)
        if progress is not None:
            print(file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    elif report.ok:
        print(
            f"ok: {report.size} entries, root {report.root}, {report.checkpoints} checkpoints, "
            f"{report.payloads_present} payloads present, {report.payloads_purged} purged"
        )
    else:
        print(f"TAMPERING OR INCONSISTENCY: {report.problem}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_TAMPERED


def _read_small_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the {what} file: {exc}") from None


def _audit_verifier(args: argparse.Namespace) -> Verifier:
    text = (
        _read_small_file(args.verifier_key_file, "verifier key")
        if args.verifier_key_file
        else args.verifier_key.strip()
    )
    try:
        return parse_verifier_key(text)
    except CheckpointError as exc:
        raise CliError(f"bad verifier key: {exc}") from None


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
    verifier = _audit_verifier(args)
    if args.offline == bool(args.url):
        raise CliError("give either --url (check the server) or --offline (check the mirror)")

    def run(mirror: Mirror) -> AuditReport:
        if args.offline:
            return verify_mirror(mirror, verifier)

        async def online() -> AuditReport:
            async with AuditLedgerClient(args.url, _audit_token(args)) as client:
                return await audit_server(
                    client, mirror, verifier, inclusion_checks=args.inclusion_checks
                )

        return asyncio.run(online())

    return _report_audit(args, Path(args.mirror), run, create=not args.offline)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:

        def run(mirror: Mirror) -> AuditReport:
            verifier = parse_verifier_key(ledger.verifier_key())
            source = LedgerSource(ledger)
            report = asyncio.run(
                audit_server(source, mirror, verifier, inclusion_checks=args.inclusion_checks)
            )
            # Headers only, but records leave the service: as tamper-evident as an API read.
            if report.new_leaves:
                ledger.record_operation(
                    "leaves_exported",
                    {
                        "principal": CLI_WRITER,
                        "tree_size": report.tree_size,
                        "count": report.new_leaves,
                    },
                )
            return report

        return _report_audit(args, Path(args.mirror), run, create=True)


def _report_audit(
    args: argparse.Namespace, directory: Path, run: Callable[[Mirror], AuditReport], *, create: bool
) -> int:
    """Run an audit on the locked mirror and print its outcome; exit 1 on a contradiction."""
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


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: FastAPI and uvicorn cost a second of start-up every other command skips.
    from audit_ledger.api.server import serve  # noqa: PLC0415

    serve(settings, args.host, args.port, args.workers)
    return EXIT_OK


def cmd_principals_add(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        token = ledger.add_principal(args.name, args.role)
    print(
        f"principal {args.name} created with roles {', '.join(sorted(set(args.role)))}",
        file=sys.stderr,
    )
    print("bearer token (shown once; only its hash is stored):", file=sys.stderr)
    print(token)
    return EXIT_OK


def cmd_principals_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        for p in ledger.principals():
            state = f"revoked {p.revoked_at}" if p.revoked_at else "active"
            print(f"{p.name}\t{','.join(p.roles)}\t{state}\tcreated {p.created_at}")
    return EXIT_OK


def cmd_principals_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        ledger.revoke_principal(args.name)
    print(f"principal {args.name} revoked", file=sys.stderr)
    return EXIT_OK


def cmd_retention_run(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        report = ledger.run_retention(dry_run=args.dry_run)
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_erasure_request(args: argparse.Namespace, settings: Settings) -> int:
    # Passed on verbatim: the blind index of "123" equals that of 123, while int("007") would
    # erase subject "7" instead (and int() of other Unicode digits would crash or do the same).
    with _ledger(settings) as ledger:
        report = ledger.erase_subject(args.user_id, categories=args.category or None)
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_holds_create(args: argparse.Namespace, settings: Settings) -> int:
    # The scope picks the option (as the API does): "--scope order --user-id 1 --order-id X"
    # holds order X, not an order named "1". Values are verbatim, as above.
    value: str | None = {
        "subject": args.user_id,
        "order": args.order_id,
        "category": args.category,
    }.get(args.scope)
    with _ledger(settings) as ledger:
        hold = ledger.create_hold(
            args.scope, value=value, since=args.since, until=args.until, reason=args.reason
        )
    print(hold.hold_id)
    return EXIT_OK


def cmd_holds_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        for hold in ledger.holds():
            state = f"released (seq {hold.released_seq})" if hold.released_seq else "active"
            print(
                f"{hold.hold_id}\t{hold.scope}\t{hold.scope_value or ''}\t"
                f"{hold.since or ''}\t{hold.until or ''}\t{state}"
            )
    return EXIT_OK


def cmd_holds_release(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        seq = ledger.release_hold(args.hold_id)
    print(f"released {args.hold_id} (recorded as seq {seq})", file=sys.stderr)
    return EXIT_OK


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from audit_ledger.scheduler import run_scheduler_forever  # noqa: PLC0415 - see cmd_serve

    configure_logging(settings.log_dir)
    with _ledger(settings) as ledger:
        run_scheduler_forever(ledger)
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a non-negative integer")
    return int(text)


def _mirror_options(parser: argparse.ArgumentParser, func: Callable[..., int]) -> None:
    """What ``audit`` and ``export`` share: the mirror, the proofs sampled, the report."""
    parser.add_argument("--mirror", required=True, help="directory of the auditor's mirror")
    parser.add_argument(
        "--inclusion-checks",
        type=_count,
        default=DEFAULT_INCLUSION_CHECKS,
        help="inclusion proofs to check among the new leaves (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=func)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit 2 with usage; keep one line
        raise CliError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="audit-ledger",
        description="Append-only, hash-chained, Merkle-tree compliance audit ledger.",
        epilog="Configuration comes from AUDIT_LEDGER_* environment variables "
        "(AUDIT_LEDGER_DATABASE_URL, AUDIT_LEDGER_KEYS_DIR, AUDIT_LEDGER_CHECKPOINT_ORIGIN, ...).",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    keys = sub.add_parser("keys", help="key files").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    init = keys.add_parser("init", help="create the key files (refuses to overwrite)")
    init.add_argument("--keys-dir", help="default: AUDIT_LEDGER_KEYS_DIR or ./keys")
    init.add_argument("--origin", help="checkpoint origin / key name")
    init.set_defaults(func=cmd_keys_init)
    keys.add_parser(
        "rotate-kek",
        help="new key-encryption key; re-wraps every data key (the old KEK is kept as retired)",
    ).set_defaults(func=cmd_keys_rotate_kek)
    keys.add_parser(
        "prune-keks",
        help="delete retired key-encryption keys no data key needs (after restarting services)",
    ).set_defaults(func=cmd_keys_prune_keks)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)
    grants = db.add_parser("grants", help="least-privilege grants for the application role")
    grants.add_argument("--role", required=True)
    grants.add_argument("--apply", action="store_true", help="execute them (PostgreSQL)")
    grants.set_defaults(func=cmd_db_grants)

    append = sub.add_parser("append", help="append JSON-lines events (bulk import)")
    append.add_argument("file", nargs="?", default="-", help="file of JSON lines, or - (stdin)")
    append.add_argument("--writer", default=CLI_WRITER, help="writer name recorded in headers")
    append.add_argument("--batch-size", type=_positive_int, default=1000)
    append.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="processes that parse and validate lines ahead of the commits (default: one per "
        f"core, at most {MAX_IMPORT_JOBS}, for files of 4 MiB or more)",
    )
    append.set_defaults(func=cmd_append)

    sub.add_parser("checkpoint", help="sign a checkpoint of the current log").set_defaults(
        func=cmd_checkpoint
    )
    verify = sub.add_parser("verify", help="verify the whole ledger")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="processes that check entries (default: one per core for large logs)",
    )
    verify.set_defaults(func=cmd_verify)
    audit = sub.add_parser(
        "audit",
        help="as an auditor: check a server's signed checkpoint and leaves into a local mirror",
        description="Check the latest signed checkpoint of a server, that it extends the one "
        "checked last time (consistency proof), and every new leaf (chain, format, Merkle root, "
        "sampled inclusion proofs), keeping the verified leaves in MIRROR; with --offline, "
        "re-check MIRROR alone. Exit 0 intact, 1 a contradiction (documents kept in "
        "MIRROR/evidence/), 2 usage, configuration or connection error. Needs no database "
        "and no keys but the verifier key.",
    )
    _mirror_options(audit, func=cmd_audit)
    audit.add_argument("--url", help="the ledger's base URL (e.g. https://ledger.internal)")
    audit.add_argument("--offline", action="store_true", help="re-check the mirror only")
    key = audit.add_mutually_exclusive_group(required=True)
    key.add_argument("--verifier-key", help="the published verifier key (name+hash+key)")
    key.add_argument("--verifier-key-file", help="a file holding the verifier key")
    audit.add_argument(
        "--token-file", help=f"file holding an auditor bearer token (default: ${AUDIT_TOKEN_ENV})"
    )
    export = sub.add_parser(
        "export",
        help="write the log's headers into an auditor's mirror (checked like audit)",
        description="Copy the leaves covered by the latest checkpoint from the database into "
        "MIRROR (the format 'audit' keeps), checking them exactly as 'audit' does, for an "
        "auditor to re-check with 'audit --offline'. Headers only, never plaintext; the "
        "export is recorded in ledger_operations. Exit codes as for 'audit'.",
    )
    _mirror_options(export, func=cmd_export)
    serve_p = sub.add_parser("serve", help="run the HTTP service (uvicorn)")
    serve_p.add_argument("--host", default="127.0.0.1")
    serve_p.add_argument("--port", type=_positive_int, default=8000)
    serve_p.add_argument("--workers", type=_positive_int, default=1)
    serve_p.set_defaults(func=cmd_serve)

    principals = sub.add_parser("principals", help="API principals and their roles")
    psub = principals.add_subparsers(dest="sub", required=True, parser_class=_Parser)
    add = psub.add_parser("add", help="create a principal; prints its token on the last line")
    add.add_argument("name")
    add.add_argument(
        "--role",
        action="append",
        required=True,
        help=f"one of: {', '.join(sorted(ROLES))} (repeatable)",
    )
    add.set_defaults(func=cmd_principals_add)
    psub.add_parser("list", help="list principals").set_defaults(func=cmd_principals_list)
    revoke = psub.add_parser("revoke", help="revoke a principal's token")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_principals_revoke)
    ret = sub.add_parser("retention", help="tiered retention").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    run = ret.add_parser("run", help="purge expired payloads and destroy expired keys now")
    run.add_argument("--dry-run", action="store_true", help="print what would be destroyed")
    run.set_defaults(func=cmd_retention_run)

    erasure = sub.add_parser("erasure", help="data-subject erasure").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    req = erasure.add_parser("request", help="erase one subject's data (crypto-shredding)")
    req.add_argument("--user-id", required=True)
    req.add_argument("--category", action="append", help="limit to these categories")
    req.set_defaults(func=cmd_erasure_request)

    holds = sub.add_parser("holds", help="legal holds").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    create = holds.add_parser("create", help="place a legal hold; prints its id")
    create.add_argument(
        "--scope", required=True, choices=["subject", "order", "category", "time_range"]
    )
    create.add_argument("--user-id")
    create.add_argument("--order-id")
    create.add_argument("--category")
    create.add_argument("--since", help="RFC 3339, inclusive (occurred_at)")
    create.add_argument("--until", help="RFC 3339, exclusive (occurred_at)")
    create.add_argument("--reason")
    create.set_defaults(func=cmd_holds_create)
    holds.add_parser("list", help="list legal holds").set_defaults(func=cmd_holds_list)
    release = holds.add_parser("release", help="release a legal hold")
    release.add_argument("hold_id")
    release.set_defaults(func=cmd_holds_release)

    sub.add_parser("scheduler", help="run the scheduled jobs alone (no HTTP)").set_defaults(
        func=cmd_scheduler
    )
    return parser


class _OneLineWarnings(logging.Formatter):
    """Library warnings on stderr as one line each, never with a traceback (a command's own
    error is its last line; without a handler Python would print such records raw)."""

    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(record.getMessage().split())
        return f"audit-ledger: {record.levelname.lower()}: {record.name}: {message}"


def _stderr_warnings() -> None:
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLineWarnings())
    handler._audit_ledger = True  # type: ignore[attr-defined] # replaced by configure_logging
    root.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    _stderr_warnings()
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args, load_settings())
    except CliError as exc:
        _err(str(exc))
    except DatabaseUnavailableError:
        _err("database is unreachable (check AUDIT_LEDGER_DATABASE_URL and that it is running)")
    except AuditLedgerError as exc:
        _err(str(exc))
    except SQLAlchemyError as exc:  # a driver error not mapped by the storage layer
        _err(f"database error: {exc.__class__.__name__}")
    except KeyboardInterrupt:
        _err("interrupted")
    else:
        return code
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
