"""Quiet by default (issue #15 item 7): a real ``audit-ledger scheduler`` process keeps its
per-tick lines out of stdout (they are in the application log file, where they were before),
APScheduler's "executed successfully" lines are gone, and a tick skipped by a replica is not
reported as run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from audit_ledger.ledger.service import Ledger
from audit_ledger.scheduler import DONE, default_jobs, run_job
from audit_ledger.settings import Settings
from tests.support.polling import wait_until
from tests.support.servers import cli_env


def _scheduler_lines(log_dir: Path) -> list[str]:
    path = log_dir / "application.log"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    return [str(x["event"]) for x in lines if x.get("logger", "").endswith(".scheduler")]


@pytest.mark.process
def test_the_scheduler_process_keeps_ticks_out_of_stdout(
    settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(settings)
    log_dir = Path(env["AUDIT_LEDGER_LOG_DIR"])
    env.update(
        AUDIT_LEDGER_CHECKPOINT_INTERVAL_SECONDS="1",
        AUDIT_LEDGER_VERIFY_RECENT_INTERVAL_SECONDS="1",
        PYTHONUNBUFFERED="1",  # nothing written to stdout can hide in a buffer
    )
    out = tmp_path / "stdout"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "audit_ledger.cli", "scheduler"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            # Several ticks of the one-second jobs: they ran and said so, in the file.
            wait_until(
                lambda: sum("job verify_recent tick" in e for e in _scheduler_lines(log_dir)) >= 3,
                timeout=60,
                message="three verify_recent ticks logged",
            )
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    stdout = out.read_text("utf-8", errors="replace")
    assert "job verify_recent tick" not in stdout
    assert "job checkpoint tick" not in stdout
    assert "executed successfully" not in stdout
    assert "Running job" not in stdout
    assert any("job checkpoint tick" in e for e in _scheduler_lines(log_dir))


def test_a_skipped_tick_is_not_reported_as_run(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger.open(settings)
    try:
        (job,) = [j for j in default_jobs(ledger) if j.name == "verify_recent"]
        now = ledger.clock()
        with caplog.at_level("DEBUG", logger="audit_ledger.application.scheduler"):
            assert run_job(ledger, job, now) == "ran"
            assert run_job(ledger, job, now) == DONE  # another replica's turn, same tick
        info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
        debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
        assert len(info) == 1
        assert info[0].endswith(": ok")
        assert len(debug) == 1
        assert debug[0].endswith(DONE)
    finally:
        ledger.close()
