"""Undecodable bytes and NULs in CLI text arguments → one line naming the option, exit 2
(issue #12 item 6: ``erasure request --user-id $'\\xff'`` printed a traceback).

Python hands an undecodable argv byte to the program as a lone surrogate (PEP 383); every text
option of every command that reaches the ledger is tried with one, on both backends, in this
process (cheap); the reported case also runs as the real program with the raw byte in argv.
A bad line in a bulk import names the line, not its content.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit_ledger.settings import Settings
from tests.support.cli import assert_one_line_error, env_for, run_cli
from tests.support.factories import event

BAD = "\udcff"  # what Python makes of the byte 0xff in argv

#: Every text option or argument of the commands that hand text to the ledger, with the rest
#: of a valid command line around it; ``{}`` is where the bad value goes, ``name`` the option.
COMMANDS: list[tuple[str, list[str]]] = [
    ("--user-id", ["erasure", "request", "--user-id", "{}"]),
    ("--category", ["erasure", "request", "--user-id", "u-1", "--category", "{}"]),
    ("--user-id", ["holds", "create", "--scope", "subject", "--user-id", "{}"]),
    ("--order-id", ["holds", "create", "--scope", "order", "--order-id", "{}"]),
    ("--category", ["holds", "create", "--scope", "category", "--category", "{}"]),
    ("--since", ["holds", "create", "--scope", "time_range", "--since", "{}"]),
    ("--until", ["holds", "create", "--scope", "time_range", "--until", "{}"]),
    ("--reason", ["holds", "create", "--scope", "subject", "--user-id", "u", "--reason", "{}"]),
    ("hold_id", ["holds", "release", "{}"]),
    ("name", ["principals", "add", "{}", "--role", "auditor"]),
    ("--role", ["principals", "add", "bot-9", "--role", "{}"]),
    ("name", ["principals", "revoke", "{}"]),
    ("--writer", ["append", "--writer", "{}", "-"]),
    ("--role", ["db", "grants", "--role", "{}"]),
    ("--origin", ["keys", "init", "--origin", "{}", "--keys-dir", "/nonexistent/k"]),
]


@pytest.mark.parametrize(
    ("option", "argv"), COMMANDS, ids=[" ".join(a[:2]) + " " + o for o, a in COMMANDS]
)
def test_undecodable_argument_is_one_line_naming_the_option(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    option: str,
    argv: list[str],
) -> None:
    args = [BAD if a == "{}" else a for a in argv]
    code, out, err = run_cli(monkeypatch, capsys, settings, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"audit-ledger: error: {option} must be valid Unicode"), lines[0]
    assert "Traceback" not in err


@pytest.mark.process
def test_the_reported_case_as_the_real_program(settings: Settings) -> None:
    """Raw 0xff in argv, through the real interpreter's argv decoding."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_LEDGER_")}
    env |= env_for(settings.database_url, settings.keys_dir)
    raw = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"audit_ledger.cli",
            b"erasure",
            b"request",
            b"--user-id",
            b"\xff",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = assert_one_line_error(raw)
    assert "--user-id" in line


def test_nul_in_an_imported_line_names_the_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    good = event("security_events")
    bad = event("security_events")
    bad["data"]["outcome"] = "de\x00nied-c4n4ry"
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    code, out, err = run_cli(monkeypatch, capsys, settings, "append", str(path))
    assert code == 2, (out, err)
    assert "line 2" in err
    assert "data.outcome" in err
    assert "c4n4ry" not in err
