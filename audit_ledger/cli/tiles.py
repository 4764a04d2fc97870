"""``audit-ledger tiles publish DIR``: the log as static C2SP tlog-tiles files (DESIGN §7).

Writes ``DIR/checkpoint`` and ``DIR/tile/…`` with the paths ``/tlog/`` serves, so any static
web server, object store or CDN over DIR serves the same API. Incremental and atomic (see
:meth:`audit_ledger.ledger.tiles.Tiles.publish`); safe to run again at any time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit_ledger.cli.common import EXIT_OK, CliError, _ledger

if TYPE_CHECKING:
    from audit_ledger.settings import Settings


def add_tiles_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``tiles publish`` on the top-level subparsers ``sub``."""
    tiles = sub.add_parser("tiles", help="C2SP tlog-tiles").add_subparsers(
        dest="sub", required=True, parser_class=parser_class
    )
    publish = tiles.add_parser(
        "publish",
        help="write the latest checkpoint and its tiles into DIR (incremental, atomic)",
        description="Write DIR/checkpoint and every tile and entry bundle of the latest "
        "checkpoint under DIR/tile/, with the paths GET /tlog/ serves. Full tiles already in "
        "DIR are never rewritten; the checkpoint is written last. Default DIR: "
        "AUDIT_LEDGER_TILES_DIR. The files hold headers, never plaintext.",
    )
    publish.add_argument("dir", nargs="?", help="default: $AUDIT_LEDGER_TILES_DIR")
    publish.set_defaults(func=cmd_tiles_publish)


def cmd_tiles_publish(args: argparse.Namespace, settings: Settings) -> int:
    directory = Path(args.dir) if args.dir else settings.tiles_dir
    if directory is None:
        raise CliError("give DIR or set AUDIT_LEDGER_TILES_DIR")
    with _ledger(settings) as ledger:
        report = ledger.tiles.publish(directory)
    print(
        f"published tree size {report.tree_size} (was {report.previous_size}): "
        f"{report.written} tiles written, {report.kept} already there"
    )
    return EXIT_OK
