"""Principal commands added with the chain binding (issue #12): ``principals rotate`` and
``principals attest``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from audit_ledger.cli.common import EXIT_OK, _ledger

if TYPE_CHECKING:
    from audit_ledger.settings import Settings


def cmd_principals_rotate(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        token = ledger.principals.rotate(args.name)
    print(
        f"principal {args.name} has a new token; the old one no longer works",
        file=sys.stderr,
    )
    print("bearer token (shown once; only its hash is stored):", file=sys.stderr)
    print(token)
    return EXIT_OK


def cmd_principals_attest(args: argparse.Namespace, settings: Settings) -> int:
    with _ledger(settings) as ledger:
        names = ledger.principals.attest()
    for name in names:
        print(name)
    print(
        f"{len(names)} principal(s) from before the upgrade bound to the chain",
        file=sys.stderr,
    )
    return EXIT_OK


def add_parsers(psub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``rotate`` and ``attest`` under ``principals``."""
    rotate = psub.add_parser(
        "rotate", help="issue a new token for a principal (same name); prints it on the last line"
    )
    rotate.add_argument("name")
    rotate.set_defaults(func=cmd_principals_rotate)
    attest = psub.add_parser(
        "attest",
        help="bind principals created before the 0004 upgrade to the chain (run once, as owner)",
    )
    attest.set_defaults(func=cmd_principals_attest)
