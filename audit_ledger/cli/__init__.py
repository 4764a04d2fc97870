"""The ``audit-ledger`` command line: a thin shell over the ledger service.

Exit codes: 0 success (for ``verify``: intact), 1 tampering or inconsistency found, 2 usage,
configuration, input or database error, 141 the reader of stdout went away before the output was
written (``… | head -1``; what a tool killed by SIGPIPE gives). Errors are one line on stderr,
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Sequence
from typing import Any

from audit_ledger.cli import principal_commands
from audit_ledger.cli.audit import (
    add_verify_export,
    add_verify_proof,
    cmd_audit,
    cmd_export,
    count,
    mirror_options,
    trust_options,
)
from audit_ledger.cli.backup import add_backup_parser
from audit_ledger.cli.commands import (
    cmd_append,
    cmd_checkpoint,
    cmd_db_grants,
    cmd_db_upgrade,
    cmd_erasure_list,
    cmd_erasure_request,
    cmd_holds_create,
    cmd_holds_list,
    cmd_holds_release,
    cmd_keys_init,
    cmd_keys_prune_keks,
    cmd_keys_rotate_kek,
    cmd_principals_add,
    cmd_principals_list,
    cmd_principals_revoke,
    cmd_retention_run,
    cmd_scheduler,
    cmd_serve,
    cmd_verify,
)
from audit_ledger.cli.common import (
    AUDIT_TOKEN_ENV,
    CLI_WRITER,
    EXIT_ERROR,
    MAX_IMPORT_JOBS,
    CliError,
    _err,
)
from audit_ledger.cli.openapi import cmd_openapi
from audit_ledger.cli.record_exports import add_export_records
from audit_ledger.cli.tiles import add_tiles_commands
from audit_ledger.cli.tlog import add_keys_rotate_checkpoint, add_prove
from audit_ledger.cli.witness import add_witness_commands
from audit_ledger.errors import AuditLedgerError, DatabaseUnavailableError
from audit_ledger.ledger.appends.defaults import IMPORT_BATCH_SIZE
from audit_ledger.ledger.bodies import text_problem
from audit_ledger.roles import ROLES

# --- parser --------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return int(text)


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
    add_keys_rotate_checkpoint(keys)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)
    grants = db.add_parser("grants", help="least-privilege grants for the application role")
    grants.add_argument("--role", required=True)
    grants.add_argument("--apply", action="store_true", help="execute them (PostgreSQL)")
    grants.set_defaults(func=cmd_db_grants)
    add_backup_parser(db)

    append = sub.add_parser("append", help="append JSON-lines events (bulk import)")
    append.add_argument("file", nargs="?", default="-", help="file of JSON lines, or - (stdin)")
    append.add_argument("--writer", default=CLI_WRITER, help="writer name recorded in headers")
    append.add_argument(
        "--batch-size",
        type=_positive_int,
        default=IMPORT_BATCH_SIZE,
        help=f"lines per transaction (default {IMPORT_BATCH_SIZE})",
    )
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
    verify_trust = verify.add_mutually_exclusive_group()
    verify_trust.add_argument(
        "--verifier-key", action="append", help="accept checkpoints signed by this key (repeat)"
    )
    verify_trust.add_argument("--policy", help="accept the log keys of this tlog-policy file")
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
    mirror_options(audit, func=cmd_audit)
    audit.add_argument("--url", help="the ledger's base URL (e.g. https://ledger.internal)")
    audit.add_argument(
        "--retries",
        type=count,
        default=5,
        help="retries per request on connection errors, 429 and 502-504 (default: %(default)s)",
    )
    audit.add_argument("--offline", action="store_true", help="re-check the mirror only")
    trust_options(audit, required=True)
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
    mirror_options(export, func=cmd_export)
    export.set_defaults(what=None)
    for action in export._actions:  # --mirror is for the mirror form; ``export records`` has none
        action.required = action.required and action.dest != "mirror"
    add_export_records(export, _Parser)
    add_prove(sub)
    add_verify_proof(sub)
    add_verify_export(sub)
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
    principal_commands.add_parsers(psub)
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
    listing = erasure.add_parser(
        "list",
        help="erasure requests, newest first: id, state, blocking holds, subject (blind index), "
        "categories, requested by, at, latest erasure seq",
    )
    listing.add_argument("--state", choices=["pending", "blocked", "done"])
    listing.set_defaults(func=cmd_erasure_list)

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
    release.add_argument("--reason", help="why it is released (kept in the release's record)")
    release.set_defaults(func=cmd_holds_release)

    sub.add_parser("scheduler", help="run the scheduled jobs alone (no HTTP)").set_defaults(
        func=cmd_scheduler
    )
    add_witness_commands(sub)
    sub.add_parser("openapi", help="print the OpenAPI document (/openapi.json)").set_defaults(
        func=cmd_openapi
    )
    add_tiles_commands(sub, _Parser)
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


#: Arguments that name files or directories: a Linux path may hold any bytes but NUL, which
#: Python carries as lone surrogates (PEP 383) and hands back to the OS unchanged.
_PATH_ARGUMENTS = frozenset(
    {"file", "keys_dir", "mirror", "token_file", "verifier_key_file", "out", "manifest"}
)


def _refuse_unsafe_text(args: argparse.Namespace) -> None:
    """Every text argument that reaches the ledger is valid Unicode without NUL: an undecodable
    byte (``--user-id $'\\xff'``) arrives as a lone surrogate, which no database or blind index
    can take. One line naming the option, never its value."""
    for dest, value in vars(args).items():
        if dest in _PATH_ARGUMENTS or dest == "func":
            continue
        for item in value if isinstance(value, list) else [value]:
            problem = text_problem(item) if isinstance(item, str) else None
            if problem is not None:
                name = f"--{dest.replace('_', '-')}" if dest not in _POSITIONALS else dest
                raise CliError(f"{name} {problem}")


#: Positional arguments, named without dashes in errors.
_POSITIONALS = frozenset({"name", "hold_id", "file"})


#: 128 + SIGPIPE: how a shell reports a tool whose reader went away (``set -o pipefail``).
EXIT_STDOUT_CLOSED = 141


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reading end is closed (poll says POLLERR or
    POLLHUP), as opposed to a BrokenPipeError from some other pipe or connection."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an in-memory stream
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _drop_stdout() -> None:
    # Python flushes stdout once more at exit and would print "Exception ignored … BrokenPipe"
    # for what is still buffered: point the descriptor at /dev/null first.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _is_database_error(exc: Exception) -> bool:
    """Whether ``exc`` is SQLAlchemy's, without importing SQLAlchemy for commands that never
    did (a quarter of a second of start-up): if it is not loaded, no error can be one of its."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.SQLAlchemyError)


def main(argv: Sequence[str] | None = None) -> int:
    _stderr_warnings()
    try:
        args = build_parser().parse_args(argv)
        _refuse_unsafe_text(args)
        # Only now: settings (pydantic) are not needed for --help or a usage error.
        from audit_ledger.settings import load_settings  # noqa: PLC0415

        code: int = args.func(args, load_settings())
        # Here, not at interpreter exit: output shorter than the buffer is written only now,
        # and a reader gone by then must end up in the handler below.
        sys.stdout.flush()
    except BrokenPipeError:
        # Every command, in one place: `audit-ledger … | head -1` ends quietly.
        if _stdout_reader_gone():
            _drop_stdout()
            return EXIT_STDOUT_CLOSED
        _err("a pipe or connection closed while the command wrote to it")
    except CliError as exc:
        _err(str(exc))
    except DatabaseUnavailableError:
        _err("database is unreachable (check AUDIT_LEDGER_DATABASE_URL and that it is running)")
    except AuditLedgerError as exc:
        _err(str(exc))
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        # A driver error not mapped by the storage layer.
        _err(f"database error: {exc.__class__.__name__}")
    except KeyboardInterrupt:
        _err("interrupted")
    else:
        return code
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
