"""``audit-ledger export``: the database's leaves into an auditor's mirror, checked on the way
exactly as ``audit`` checks a server, and re-checkable with ``audit --offline``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from audit_ledger.auditor.mirror import LEAVES_FILE, parse_leaf_line
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.support.cli import run_cli
from tests.support.factories import event

Run = tuple[int, str, str]


def _fill(ledger: Ledger, count: int) -> int:
    events = [ledger.appends.prepare(event("security_events", user_id=7)) for _ in range(count)]
    ledger.appends.append(events, "bot")
    made = ledger.log.checkpoint()
    assert made is not None
    return made.tree_size


def _export(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    mirror: Path,
) -> tuple[int, dict[str, object], str]:
    code, out, err = run_cli(
        monkeypatch, capsys, settings, "export", "--mirror", str(mirror), "--json"
    )
    return code, json.loads(out) if out.strip() else {}, err


def test_export_then_offline_audit(
    ledger: Ledger,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mirror = tmp_path / "mirror"
    first = _fill(ledger, 1200)
    code, report, err = _export(monkeypatch, capsys, settings, mirror)
    assert code == 0, err
    assert (report["tree_size"], report["new_leaves"], report["previous_size"]) == (first, first, 0)
    lines = (mirror / LEAVES_FILE).read_bytes().splitlines(keepends=True)
    assert [parse_leaf_line(line, 1) for line in lines] == ledger.store.leaves(0, first)

    # The export itself is on the record (written after the checkpoint it exported).
    ops = ledger.store.leaves(first, ledger.log.size())
    assert len(ops) == 1
    assert b'"event_type":"leaves_exported"' in ops[0][1]

    second = _fill(ledger, 30)
    code, report, err = _export(monkeypatch, capsys, settings, mirror)
    assert code == 0, err
    assert (report["previous_size"], report["tree_size"]) == (first, second)
    assert report["consistency_proof"] is True

    size = ledger.log.size()
    code, report, err = _export(monkeypatch, capsys, settings, mirror)
    assert (code, report["new_leaves"]) == (0, 0), err
    assert ledger.log.size() == size  # nothing exported, nothing recorded

    key = ledger.log.verifier_key()
    code, out, err = run_cli(
        monkeypatch, capsys, settings, "audit", "--offline", "--mirror", str(mirror),
        "--verifier-key", key,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"ok: the mirror's {second} leaves match its checkpoint")


def test_export_without_a_checkpoint_is_a_usage_error(
    ledger: Ledger,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _export(monkeypatch, capsys, settings, tmp_path / "m")
    assert code == 2
    assert err.strip().splitlines() == [
        "audit-ledger: error: there is no signed checkpoint yet (the log is empty or none was made)"
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_export_of_a_tampered_database_fails(
    ledger: Ledger,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fill(ledger, 50)
    with sqlite3.connect(settings.database_url.removeprefix("sqlite:///")) as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("DELETE FROM entries WHERE seq = 20")
    code, report, err = _export(monkeypatch, capsys, settings, tmp_path / "m")
    assert code == 1
    assert report["ok"] is False
    assert "seq 20" in str(report["problem"])
    assert "AUDIT FAILED" in err
