"""``audit-ledger audit --policy`` and key histories (issue #13 item 6): against a server on a
real socket, the served checkpoint must be signed by a log key of the policy and meet its
witness quorum; repeated ``--verifier-key`` is a key history. The CLI runs in this process
(``main([...])``: a subprocess would add nothing the other audit tests do not cover)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_ledger.settings import Settings
from tests.integration.api.conftest import ThreadedServer
from tests.support.api import open_ledger
from tests.support.cli import run_cli
from tests.support.factories import event
from tests.support.tlog_keys import log_key, witness


def _fill(settings: Settings, count: int) -> str:
    with open_ledger(settings) as ledger:
        raws = [event("security_events", user_id=i) for i in range(count)]
        ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        assert ledger.log.checkpoint() is not None
        return ledger.log.verifier_key()


def test_audit_with_policies(
    socket_server: ThreadedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = socket_server.settings
    key = _fill(settings, 12)
    monkeypatch.setenv("AUDIT_LEDGER_TOKEN", socket_server.tokens["auditor"])
    stranger = log_key("test.example/ledger").verifier.encode()
    w = witness("witness.example")

    def audit(mirror: str, *trust: str) -> tuple[int, str, str]:
        return run_cli(
            monkeypatch, capsys, settings,
            "audit", "--url", socket_server.url, "--mirror", str(tmp_path / mirror), *trust,
        )  # fmt: skip

    def policy(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    witnessed = policy("witnessed", f"log {key}\nwitness W {w.key.encode()}\nquorum W\n")
    code, _, err = audit("m1", "--policy", witnessed)
    assert code == 1
    assert "AUDIT FAILED: the server's checkpoint: the quorum is not met: witness W" in err
    assert list((tmp_path / "m1" / "evidence").glob("*quorum-not-met*"))

    code, out, err = audit("m2", "--policy", policy("plain", f"# ours\nlog {key}\nquorum none\n"))
    assert code == 0, err
    assert "\nok: checkpoint of " in "\n" + out  # (the in-process server logs to stdout too)
    # The same mirror, now with a key history that also lists an unknown key: still fine.
    code, _, err = audit("m2", "--verifier-key", stranger, "--verifier-key", key)
    assert code == 0, err
    code, _, err = audit("m3", "--verifier-key", stranger)
    assert code == 1
    assert "does not verify with the verifier key" in err
    code, _, err = audit("m2", "--verifier-key", stranger)
    assert code == 2
    assert "another verifier key" in err

    for trust, problem in [
        (["--policy", policy("bad", "log nope\nquorum none\n")], "bad policy file: policy line 1"),
        (["--policy", policy("nolog", "quorum none\n")], "lists no log key"),
        (["--policy", witnessed, "--verifier-key", key], "not allowed with"),
        (["--verifier-key", key, "--verifier-key", key], "listed twice"),
    ]:
        code, _, err = audit("m4", *trust)
        assert code == 2, (trust, err)
        assert problem in err, (trust, err)
        assert len(err.strip().splitlines()) == 1


def test_audit_across_a_checkpoint_key_rotation(
    socket_server: ThreadedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An auditor's mirror started under the old key follows the log through the rotation
    with a key history; the old key alone fails once the window is closed."""
    settings = socket_server.settings
    old = _fill(settings, 5)
    monkeypatch.setenv("AUDIT_LEDGER_TOKEN", socket_server.tokens["auditor"])

    def cli(*args: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, settings, *args)

    def audit(*trust: str) -> tuple[int, str, str]:
        mirror = str(tmp_path / "mirror")
        return cli("audit", "--url", socket_server.url, "--mirror", mirror, *trust)

    assert audit("--verifier-key", old)[0] == 0
    code, new, err = cli("keys", "rotate-checkpoint")
    assert code == 0, err
    new = new.strip().splitlines()[-1]
    assert audit("--verifier-key", old)[0] == 0  # the window: still signed by the old key
    code, _, err = cli("keys", "rotate-checkpoint", "--finish")
    assert code == 0, err
    _fill(settings, 2)
    code, _, err = audit("--verifier-key", old)
    assert code == 1
    assert "does not verify with the verifier key" in err
    history = tmp_path / "history.policy"
    history.write_text(f"log {old}\nlog {new}\nquorum none\n")
    code, _, err = audit("--policy", str(history))
    assert code == 0, err
    mirror = str(tmp_path / "mirror")
    code, _, err = cli(
        "audit", "--offline", "--mirror", mirror, "--verifier-key", new, "--verifier-key", old
    )
    assert code == 0, err
