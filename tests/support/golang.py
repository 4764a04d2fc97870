"""The Go cross-check (``tests/go/tlogcheck``), built once per session with Debian's Go and
``golang.org/x/mod`` sources (packages ``golang-go`` and ``golang-golang-x-mod-dev``), offline.

Without them the tests that need it skip with the reason, unless ``AUDIT_LEDGER_REQUIRE_GO=1``
(``.ci/run``), which makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

GOPATH = Path(os.environ.get("AUDIT_LEDGER_TEST_GOPATH", "/usr/share/gocode"))
SOURCE = Path(__file__).resolve().parents[1] / "go" / "tlogcheck"
REQUIRE_GO = os.environ.get("AUDIT_LEDGER_REQUIRE_GO") == "1"


def _missing(reason: str) -> NoReturn:
    message = (
        f"Go cross-check unavailable: {reason} (apt-get install golang-go golang-golang-x-mod-dev)"
    )
    if REQUIRE_GO:
        pytest.fail(message)
    pytest.skip(message)


def build_tlogcheck(out_dir: Path) -> Path:
    """Build ``tlogcheck`` into ``out_dir`` (GOPATH mode: no module download, no network)."""
    go = shutil.which("go")
    if go is None:
        _missing("no 'go' on PATH")
    if not (GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        _missing(f"no golang.org/x/mod sources under {GOPATH}")
    binary = out_dir / "tlogcheck"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH),
        "GOCACHE": str(out_dir / "gocache"),
        "GOFLAGS": "",
    }
    result = subprocess.run(
        [str(go), "build", "-o", str(binary), "."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"go build failed: {result.stderr}"
    return binary
