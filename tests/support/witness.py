"""A real witness for tests: ``audit-ledger witness init/add-log`` then ``witness serve`` in a
subprocess on a free port, stopped (and restartable on the same port and state) at will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.cli import cli
from tests.support.servers import free_port

WITNESS_NAME = "witness.test/w1"
PREFIX = "/witness"


@dataclass
class WitnessProcess:
    """``audit-ledger witness serve`` over ``directory`` (key + SQLite state) on ``port``."""

    directory: Path
    port: int
    vkey: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The submission prefix, as ``AUDIT_LEDGER_WITNESSES`` takes it."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    @property
    def config(self) -> str:
        """One ``AUDIT_LEDGER_WITNESSES`` entry for this witness."""
        return f"{self.url} {self.vkey}"

    def init(self, *log_vkeys: str) -> None:
        made = cli("witness", "init", "--dir", str(self.directory), "--name", WITNESS_NAME)
        assert made.returncode == 0, made.stderr
        self.vkey = made.stdout.strip()
        for vkey in log_vkeys:
            added = cli("witness", "add-log", "--dir", str(self.directory), vkey)
            assert added.returncode == 0, added.stderr

    def start(self) -> None:
        assert self.process is None, "already running"
        log = (self.directory / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "audit_ledger.cli",
                "witness",
                "serve",
                "--dir",
                str(self.directory),
                "--port",
                str(self.port),
                "--prefix",
                PREFIX,
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("AUDIT_LEDGER_")},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = (self.directory / "serve.log").read_text()[-2000:]
                raise RuntimeError(f"witness exited: {text}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("witness did not answer within 60 s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.process = None

    def add_checkpoint(self, body: bytes) -> httpx.Response:
        return httpx.post(self.url + "/add-checkpoint", content=body, timeout=30)


def make_witness(tmp_path: Path, *log_vkeys: str) -> WitnessProcess:
    """A witness (initialised, not started) trusting ``log_vkeys``."""
    witness = WitnessProcess(tmp_path / "witness", free_port())
    witness.init(*log_vkeys)
    return witness
