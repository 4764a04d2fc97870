"""The ``audit-ledger`` command line, for tests: as a subprocess (:func:`cli`, exit codes and
output of the real program) or in this process (:func:`run_cli`, much cheaper)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit_ledger.cli import main as cli_main
from audit_ledger.settings import Settings
from tests.conftest import ORIGIN


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "audit_ledger.cli", *args],
        env={**clean, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    *args: str,
) -> tuple[int, str, str]:
    """``audit-ledger <args>`` in this process (argument parsing, settings from the environment,
    output): much cheaper than a subprocess per call on a loaded machine."""
    monkeypatch.setenv("AUDIT_LEDGER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AUDIT_LEDGER_KEYS_DIR", str(settings.keys_dir))
    monkeypatch.setenv("AUDIT_LEDGER_CHECKPOINT_ORIGIN", ORIGIN)
    capsys.readouterr()
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 with exactly one line on stderr and no traceback; returns that line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("audit-ledger: error: ")
    return lines[0]


def env_for(database_url: str, keys_dir: Path) -> dict[str, str]:
    return {
        "AUDIT_LEDGER_DATABASE_URL": database_url,
        "AUDIT_LEDGER_KEYS_DIR": str(keys_dir),
        "AUDIT_LEDGER_CHECKPOINT_ORIGIN": ORIGIN,
    }
