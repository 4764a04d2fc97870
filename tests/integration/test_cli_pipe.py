"""``audit-ledger … | head -1``: a command whose stdout reader went away ends quietly (exit 141,
as a tool killed by SIGPIPE; nothing on stderr), whatever the command — checked with a real pipe
whose reading end is closed before the command writes, so the outcome does not depend on who
wins a race, for a command that needs the database and one that does not; and ``head`` itself
reading the first line of a long output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audit_ledger.cli import EXIT_STDOUT_CLOSED
from audit_ledger.settings import Settings
from tests.support.servers import cli_env

pytestmark = pytest.mark.process


def _into_closed_pipe(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written
    try:
        return subprocess.run(
            [sys.executable, "-m", "audit_ledger.cli", *args],
            env=cli_env(settings),
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [("retention", "run", "--dry-run"), ("openapi",)],
    ids=["retention-run-dry-run", "openapi"],
)
def test_closed_stdout_ends_the_command_quietly(settings: Settings, args: tuple[str, ...]) -> None:
    done = _into_closed_pipe(settings, *args)
    assert done.stderr.decode() == "", done.stderr.decode()  # no traceback, no "Exception ignored"
    assert done.returncode == EXIT_STDOUT_CLOSED


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # no database involved
def test_head_reads_the_first_line_of_a_long_output(settings: Settings) -> None:
    """The shell's ``audit-ledger openapi | head -1`` (about 64 KiB: more than head reads)."""
    producer = subprocess.Popen(
        [sys.executable, "-m", "audit_ledger.cli", "openapi"],
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert producer.stdout is not None
    head = subprocess.run(
        ["head", "-c", "1"], stdin=producer.stdout, capture_output=True, timeout=60, check=False
    )
    producer.stdout.close()  # head is the only reader left, and it is gone
    _, err = producer.communicate(timeout=60)
    assert head.stdout == b"{"
    assert err.decode() == "", err.decode()
    # All of it may have fitted in the pipe before head left (exit 0); never a failure.
    assert producer.returncode in (0, EXIT_STDOUT_CLOSED)
