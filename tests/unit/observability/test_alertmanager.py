"""deploy/alertmanager.yml: valid for ``amtool check-config`` (Debian's prometheus-alertmanager),
routes every alert of deploy/audit-ledger-rules.yml by its severity (critical -> paging,
high -> chat, medium -> email), and inhibits only alerts that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.observability.test_rules import _alerts

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
CONFIG = DEPLOY / "alertmanager.yml"
AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool not installed (CI installs it: apt-get install prometheus-alertmanager)",
)
RECEIVER_OF = {"critical": "paging", "high": "chat", "medium": "email"}


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_amtool
def test_amtool_check_config() -> None:
    result = _amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_amtool
def test_a_broken_config_is_refused(tmp_path: Path) -> None:
    """The check can fail: a route to a receiver that does not exist."""
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(
        CONFIG.read_text(encoding="utf-8").replace("receiver: chat", "receiver: nobody"),
        encoding="utf-8",
    )
    result = _amtool("check-config", str(broken))
    assert result.returncode != 0
    assert "nobody" in result.stdout + result.stderr


def _route(**labels: str) -> str:
    result = _amtool(
        "config", "routes", "test", f"--config.file={CONFIG}",
        *(f"{k}={v}" for k, v in labels.items()),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@needs_amtool
def test_every_alert_is_routed_by_its_severity() -> None:
    alerts = _alerts()
    assert {a["severity"] for a in alerts.values()} <= set(RECEIVER_OF)
    for name, alert in alerts.items():
        assert (
            _route(alertname=name, severity=alert["severity"], instance="a")
            == (RECEIVER_OF[alert["severity"]])
        ), name
    # Every severity the plan names has its receiver, even if no alert uses it yet.
    for severity, receiver in RECEIVER_OF.items():
        assert _route(alertname="AuditLedgerX", severity=severity) == receiver
    # No severity, or an unknown one: still delivered (the default receiver).
    assert _route(alertname="Other") == "email"


def test_inhibition_names_only_alerts_that_exist() -> None:
    names = set(_alerts())
    text = CONFIG.read_text(encoding="utf-8")
    inhibit = text.split("inhibit_rules:", 1)[1].split("receivers:", 1)[0]
    mentioned = set(re.findall(r"AuditLedger[A-Za-z0-9]+", inhibit))
    assert mentioned, "no inhibition rules"
    assert mentioned <= names, mentioned - names
