"""``die_with_parent`` in real child processes: the parent-death signal it requests (read back
with ``PR_GET_PDEATHSIG``), the check for a parent that died before the request, and nothing
requested for a child started without a parent pid. (The workers that use it are tested being
orphaned in tests/unit/ledger/test_workers.py, tests/integration/api/test_workers.py and
tests/integration/test_verify_parallel.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from audit_ledger.parent_death import PARENT_PID_ENV, child_environment
from tests.support.processes import ROOT

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only"),
    pytest.mark.timeout(60),
]

CHILD = f"""
import ctypes, os
from audit_ledger.parent_death import die_with_parent
requested = die_with_parent()
signum = ctypes.c_int(-1)
ctypes.CDLL(None).prctl(2, ctypes.byref(signum), 0, 0, 0)  # PR_GET_PDEATHSIG
print(requested, signum.value, {PARENT_PID_ENV!r} in os.environ)
"""


def run_child(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_child_asks_for_sigterm_when_its_parent_dies() -> None:
    result = run_child(child_environment())
    assert result.returncode == 0, result.stderr
    # Requested, SIGTERM, and the variable not handed on to the child's own children.
    assert result.stdout.split() == ["True", str(int(signal.SIGTERM)), "False"], result


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    """The parent died before the child's request (the child was reparented): no signal will
    ever come, so the child stops right there, quietly."""
    env = child_environment()
    env[PARENT_PID_ENV] = str(os.getppid())  # not the child's parent: as if reparented
    result = run_child(env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_child_started_without_a_parent_pid_requests_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != PARENT_PID_ENV}
    result = run_child(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "0", "False"], result
