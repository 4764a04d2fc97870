"""``audit-ledger witness …`` as a real program: usable output, and every mistake one line on
stderr with exit 2 (no traceback, nothing submitted echoed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_ledger.core.checkpoint import make_verifier
from audit_ledger.core.cosignature import parse_cosigner_key
from tests.support.cli import assert_one_line_error, cli

pytestmark = pytest.mark.process


def test_witness_commands(tmp_path: Path) -> None:
    directory = str(tmp_path / "w")
    serve_empty = ("witness", "serve", "--dir", directory, "--port", "1")
    made = cli("witness", "init", "--dir", directory, "--name", "w.example/1")
    assert made.returncode == 0, made.stderr
    assert parse_cosigner_key(made.stdout.strip()).name == "w.example/1"
    assert "no log" in assert_one_line_error(cli(*serve_empty))
    again = assert_one_line_error(cli("witness", "init", "--dir", directory, "--name", "x/y"))
    assert "already exists" in again

    secret_looking = "not-a-key+deadbeef+c2VjcmV0"
    bad = assert_one_line_error(cli("witness", "add-log", "--dir", directory, secret_looking))
    assert secret_looking not in bad
    log_key = make_verifier(
        "log.example/l", Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    ).encode()
    added = cli("witness", "add-log", "--dir", directory, log_key)
    assert added.returncode == 0, added.stderr
    listed = cli("witness", "logs", "--dir", directory)
    assert listed.stdout == f"log.example/l {log_key} 0\n"
    shown = cli("witness", "verifier-key", "--dir", directory)
    assert shown.stdout == made.stdout

    (tmp_path / "w" / "keys" / "witness.key").chmod(0o644)
    assert "readable by others" in assert_one_line_error(cli(*serve_empty))
