"""``audit-ledger witness init | add-log | logs | verifier-key | serve``.

The witness's directory (``--dir``, default ``$AUDIT_LEDGER_WITNESS_DIR`` or ``./witness``) holds
``keys/witness.key`` (0600, in a 0700 directory) and ``witness.sqlite3``. It needs no ledger
database and no ledger keys: the ``AUDIT_LEDGER_*`` ledger settings are not read.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit_ledger.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from audit_ledger.witness.state import WitnessState

# The witness's keys and state (and the cryptography behind them) are imported by the commands
# that use them (PLC0415): every command module is imported to build the parser (issue #16).

DIR_ENV = "AUDIT_LEDGER_WITNESS_DIR"


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or os.environ.get(DIR_ENV) or "witness")


def _keys_dir(args: argparse.Namespace) -> Path:
    return _dir(args) / "keys"


def _open_state(args: argparse.Namespace) -> WitnessState:
    from audit_ledger.witness.state import STATE_FILE, WitnessState  # noqa: PLC0415

    return WitnessState(_dir(args) / STATE_FILE)


def cmd_init(args: argparse.Namespace, settings: Any) -> int:
    from audit_ledger.witness.keys import init_witness_key  # noqa: PLC0415

    key = init_witness_key(_keys_dir(args), args.name)
    _open_state(args).close()
    print(f"created {_keys_dir(args)}/witness.key (mode 0600); its verifier key:", file=sys.stderr)
    print(key.encode())
    return 0


def cmd_add_log(args: argparse.Namespace, settings: Any) -> int:
    state = _open_state(args)
    try:
        origin, verifier = state.add_log(args.vkey, args.origin)
    except CheckpointError as exc:
        raise ConfigError(f"not a log verifier key: {exc}") from None
    finally:
        state.close()
    print(f"trusting {verifier.encode()} for origin {origin}")
    return 0


def cmd_logs(args: argparse.Namespace, settings: Any) -> int:
    state = _open_state(args)
    try:
        for origin, vkey in state.logs():
            latest = state.latest(origin)
            print(f"{origin} {vkey} {latest.size if latest else 0}")
    finally:
        state.close()
    return 0


def cmd_verifier_key(args: argparse.Namespace, settings: Any) -> int:
    from audit_ledger.witness.keys import load_witness_key  # noqa: PLC0415

    print(load_witness_key(_keys_dir(args)).key.encode())
    return 0


def cmd_serve(args: argparse.Namespace, settings: Any) -> int:
    import uvicorn  # noqa: PLC0415 - only the serving command needs the server

    from audit_ledger.witness.app import create_witness_app  # noqa: PLC0415
    from audit_ledger.witness.keys import load_witness_key  # noqa: PLC0415
    from audit_ledger.witness.witness import Witness  # noqa: PLC0415

    signer = load_witness_key(_keys_dir(args))
    state = _open_state(args)
    try:
        if not state.logs():
            raise ConfigError("the witness trusts no log yet (run 'audit-ledger witness add-log')")
        app = create_witness_app(Witness(state, signer), args.prefix)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        state.close()
    return 0


def add_witness_commands(sub: Any) -> None:
    """Add ``witness …`` to the ``audit-ledger`` sub-command parser ``sub``."""
    parser = sub.add_parser("witness", help="run a tlog-witness v1 (C2SP) cosigning witness")
    commands = parser.add_subparsers(dest="sub", required=True, parser_class=type(parser))

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        p.add_argument("--dir", help=f"witness directory (default: ${DIR_ENV} or ./witness)")
        p.set_defaults(func=func)
        return p

    init = add("init", cmd_init, "create the witness key; prints its verifier key")
    init.add_argument("--name", required=True, help="witness key name, e.g. witness.example/w1")
    add_log = add("add-log", cmd_add_log, "trust a log's Ed25519 checkpoint verifier key")
    add_log.add_argument("vkey", help="the log's verifier key (name+hash+key)")
    add_log.add_argument("--origin", help="the log's origin line (default: the key name)")
    add("logs", cmd_logs, "list trusted logs: origin, verifier key, latest cosigned size")
    add("verifier-key", cmd_verifier_key, "print the witness's verifier key")
    serve = add("serve", cmd_serve, "serve POST <prefix>/add-checkpoint (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--prefix", default="", help="submission prefix path, e.g. /witness")
