"""The operator's commands: keys, database, append, checkpoint, verify, serve, principals,
retention, erasure, legal holds and the scheduler — each a thin call into the ledger."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from audit_ledger.cli.common import (
    EXIT_OK,
    EXIT_TAMPERED,
    MAX_IMPORT_JOBS,
    PARALLEL_IMPORT_MIN_BYTES,
    CliError,
    _ledger,
)
from audit_ledger.errors import (
    ImportStoppedError,
)

if TYPE_CHECKING:
    from audit_ledger.settings import Settings

# Every command module is imported to build the parser, so what only one command needs is
# imported inside it (PLC0415): start-up is part of what users time (issue #16).

# --- commands ------------------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace, settings: Settings) -> int:
    from audit_ledger.ledger import admin  # noqa: PLC0415

    keys_dir = Path(args.keys_dir) if args.keys_dir else settings.keys_dir
    origin = args.origin or settings.checkpoint_origin
    verifier = admin.create_keys(keys_dir, origin)
    print(
        f"created key files in {keys_dir} (mode 0600); keep them out of the database backups",
        file=sys.stderr,
    )
    print("checkpoint verifier key (publish it for auditors):", file=sys.stderr)
    print(verifier.encode())
    return EXIT_OK


def cmd_keys_rotate_kek(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        retired, report = ledger.key_rotation.rotate_kek()
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
        report, removed, kept = ledger.key_rotation.prune_keks()
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
    from audit_ledger.ledger import admin  # noqa: PLC0415

    revision = admin.upgrade_database(settings.database_url)
    print(f"database migrated to revision {revision}", file=sys.stderr)
    return EXIT_OK


def cmd_db_grants(args: argparse.Namespace, settings: Settings) -> int:
    from audit_ledger.ledger import admin  # noqa: PLC0415

    if not args.apply:
        for statement in admin.grant_statements(args.role, settings.policy_file):
            print(statement + ";")
        return EXIT_OK
    applied = admin.apply_grants(settings.database_url, args.role, settings.policy_file)
    print(f"applied {applied} grant statements for role {args.role}", file=sys.stderr)
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
            result = ledger.appends.import_lines(
                _read_lines(args.file), args.writer, batch_size=args.batch_size, jobs=jobs
            )
        except ImportStoppedError as exc:
            raise CliError(str(exc)) from None
    print(json.dumps({"appended": result.appended, "already_present": result.already_present}))
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        checkpoint = ledger.log.checkpoint()
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
    from audit_ledger.ledger.verify import given_trust  # noqa: PLC0415

    with _ledger(settings) as ledger:
        progress = None if args.json else _progress_printer()
        trust = given_trust(args.verifier_key or (), args.policy)
        report = ledger.verification.run(progress, jobs=args.jobs, trust=trust)
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


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: FastAPI and uvicorn cost a second of start-up every other command skips.
    from audit_ledger.api.server import serve  # noqa: PLC0415

    serve(settings, args.host, args.port, args.workers)
    return EXIT_OK


def cmd_principals_add(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        token = ledger.principals.add(args.name, args.role)
    print(
        f"principal {args.name} created with roles {', '.join(sorted(set(args.role)))}",
        file=sys.stderr,
    )
    print("bearer token (shown once; only its hash is stored):", file=sys.stderr)
    print(token)
    return EXIT_OK


def cmd_principals_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        for p in ledger.principals.all():
            state = f"revoked {p.revoked_at}" if p.revoked_at else "active"
            print(f"{p.name}\t{','.join(p.roles)}\t{state}\tcreated {p.created_at}")
    return EXIT_OK


def cmd_principals_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        ledger.principals.revoke(args.name)
    print(f"principal {args.name} revoked", file=sys.stderr)
    return EXIT_OK


def cmd_retention_run(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        report = ledger.retention.run(dry_run=args.dry_run)
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_erasure_request(args: argparse.Namespace, settings: Settings) -> int:
    # Passed on verbatim: the blind index of "123" equals that of 123, while int("007") would
    # erase subject "7" instead (and int() of other Unicode digits would crash or do the same).
    with _ledger(settings) as ledger:
        report = ledger.erasure.erase_subject(args.user_id, categories=args.category or None)
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_erasure_list(args: argparse.Namespace, settings: Settings) -> int:
    # Subjects by blind index only (as the API lists them); one tab-separated line each.
    with _ledger(settings) as ledger:
        for r in ledger.erasure.requests(state=args.state):
            seq = "" if r.last_op_seq is None else str(r.last_op_seq)
            print(
                f"{r.request_id}\t{r.state}\t{','.join(r.blocked_by)}\t{r.subject_ref}\t"
                f"{','.join(r.categories or ['*'])}\t{r.requested_by}\t{r.requested_at}\t{seq}"
            )
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
        hold = ledger.holds.create(
            args.scope, value=value, since=args.since, until=args.until, reason=args.reason
        )
    print(hold.hold_id)
    return EXIT_OK


def cmd_holds_list(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        for hold in ledger.holds.all():
            state = f"released (seq {hold.released_seq})" if hold.released_seq else "active"
            print(
                f"{hold.hold_id}\t{hold.scope}\t{hold.scope_value or ''}\t"
                f"{hold.since or ''}\t{hold.until or ''}\t{state}"
            )
    return EXIT_OK


def cmd_holds_release(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        seq = ledger.holds.release(args.hold_id, reason=args.reason)
    print(f"released {args.hold_id} (recorded as seq {seq})", file=sys.stderr)
    return EXIT_OK


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from audit_ledger.observability.logging import configure_logging  # noqa: PLC0415
    from audit_ledger.scheduler import run_scheduler_forever  # noqa: PLC0415 - see cmd_serve

    configure_logging(settings.log_dir, **settings.logging_options())
    with _ledger(settings) as ledger:
        run_scheduler_forever(ledger)
    return EXIT_OK
