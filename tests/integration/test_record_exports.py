"""Regulator exports from the CLI (issue #14 item 2), on both backends: ``export records``
writes CSV or JSON Lines of what a role may read plus a manifest, ``verify-export`` checks them
offline, tampering is caught, refusals and missing checkpoints write nothing, and every export
is a recorded read naming its exact seqs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from audit_ledger.core.seq_ranges import from_ranges
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.conftest import ORIGIN
from tests.support.cli import assert_one_line_error, env_for, run_cli
from tests.support.cli import cli as run_program
from tests.support.factories import event
from tests.support.tlog_keys import log_key

FORMULA = '=HYPERLINK("http://x","y")'


def _ops(ledger: Ledger, event_type: str) -> list[dict[str, Any]]:
    page = ledger.reads.page_for(
        ["security_team"], Query("ledger_operations", event_type, limit=1000)
    )
    return [v.data for v in page.events if v.data is not None]


@pytest.fixture
def filled(ledger: Ledger) -> dict[str, list[int]]:
    """Financial and security events interleaved, a checkpoint, then one more financial
    event the checkpoint does not cover (not exportable yet)."""
    raws = []
    for i in range(7):
        raw = event("financial_transactions" if i % 2 == 0 else "security_events", user_id=i)
        raw["data"]["note"] = FORMULA if i == 0 else f"note {i}"
        raw["data"]["nested"] = {"k": [i, "-x"]}
        raws.append(raw)
    receipts = ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    assert ledger.log.checkpoint() is not None
    late = ledger.appends.append([ledger.appends.prepare(event("financial_transactions"))], "bot")
    seqs: dict[str, list[int]] = {"late": [late[0].seq]}
    for raw, receipt in zip(raws, receipts, strict=True):
        seqs.setdefault(raw["category"], []).append(receipt.seq)
    return seqs


Cli = tuple[pytest.MonkeyPatch, pytest.CaptureFixture[str], Settings]


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings
) -> Cli:
    return monkeypatch, capsys, settings


def _run(cli: Cli, *args: str) -> tuple[int, str, str]:
    return run_cli(*cli, *args)


def _verify(cli: Cli, ledger: Ledger, path: Path, *extra: str) -> tuple[int, str, str]:
    return _run(
        cli, "verify-export", str(path), "--verifier-key", ledger.log.verifier_key(), *extra
    )


def test_csv_export_for_an_officer_verifies_offline_and_is_recorded(
    cli: Cli, ledger: Ledger, filled: dict[str, list[int]], tmp_path: Path
) -> None:
    out = tmp_path / "fin.csv"
    code, stdout, err = _run(
        cli, "export", "records", "--category", "financial_transactions",
        "--role", "compliance_officer", "--format", "csv", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "4 records" in stdout
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["seq"]) for r in rows] == filled["financial_transactions"]  # not the late one
    assert rows[0]["data.note"] == "'" + FORMULA  # formula injection guarded
    assert rows[1]["data.nested"] == '{"k":[2,"-x"]}'  # nested values as JSON
    assert rows[0]["header.category"] == "financial_transactions"
    assert rows[0]["payload_state"] == "present"
    assert out.with_name("fin.csv.manifest").exists()
    code, stdout, err = _verify(cli, ledger, out)
    assert code == 0, err
    assert stdout.startswith("ok: 4 csv records")
    (read,) = [r for r in _ops(ledger, "records_read") if r["endpoint"] == "cli export records"]
    assert list(from_ranges(read["seqs"])) == filled["financial_transactions"]
    assert read["principal"] == "cli"


def test_jsonl_export_for_the_auditor_has_headers_only(
    cli: Cli, ledger: Ledger, filled: dict[str, list[int]], tmp_path: Path
) -> None:
    out = tmp_path / "all.jsonl"
    manifest = tmp_path / "proofs.jsonl"
    code, _, err = _run(
        cli, "export", "records", "--format", "jsonl", "--out", str(out),
        "--manifest", str(manifest),
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    covered = sorted(filled["financial_transactions"] + filled["security_events"])
    assert [r["seq"] for r in records] == covered
    assert all("data" not in r and r["payload_state"] == "withheld" for r in records)
    assert FORMULA not in out.read_text()
    assert _verify(cli, ledger, out, "--manifest", str(manifest))[0] == 0
    assert _verify(cli, ledger, out)[0] == 2  # the default manifest (all.jsonl.manifest) is absent


def _tamper_cell(path: Path, column: str, value: str) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][rows[0].index(column)] = value
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)


@pytest.mark.parametrize(
    "tamper",
    ["header_cell", "data_cell", "drop_manifest_line", "drop_data_row", "other_key"],
)
def test_tampering_is_caught(
    cli: Cli, ledger: Ledger, filled: dict[str, list[int]], tmp_path: Path, tamper: str
) -> None:
    out = tmp_path / "fin.csv"
    code, _, err = _run(
        cli, "export", "records", "--category", "financial_transactions",
        "--role", "compliance_officer", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    manifest = out.with_name("fin.csv.manifest")
    extra: tuple[str, ...] = ()
    if tamper == "header_cell":
        _tamper_cell(out, "header.event_type", "refund")
    elif tamper == "data_cell":
        _tamper_cell(out, "data.note", "changed")
    elif tamper == "drop_manifest_line":
        lines = manifest.read_bytes().splitlines(keepends=True)
        manifest.write_bytes(b"".join(lines[:2] + lines[3:]))
    elif tamper == "drop_data_row":
        lines = out.read_bytes().splitlines(keepends=True)
        out.write_bytes(b"".join(lines[:-1]))
    else:
        # A key of the same name that did not sign: the checkpoint must not verify.
        extra = ("--verifier-key", log_key(ORIGIN).verifier.encode())
    if extra:
        code, _, err = _run(cli, "verify-export", str(out), *extra)
    else:
        code, _, err = _verify(cli, ledger, out)
    assert code == 1, err
    assert err.startswith("EXPORT CHECK FAILED: ")
    assert "changed" not in err
    assert "refund" not in err


def test_a_refused_export_writes_nothing_and_is_recorded(
    cli: Cli, ledger: Ledger, filled: dict[str, list[int]], tmp_path: Path
) -> None:
    out = tmp_path / "exports" / "sec.csv"
    out.parent.mkdir()
    code, _, err = _run(
        cli, "export", "records", "--category", "security_events",
        "--role", "compliance_officer", "--out", str(out),
    )  # fmt: skip
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "may not read" in err
    assert list(out.parent.iterdir()) == []
    (refused,) = _ops(ledger, "read_refused")
    assert refused == {
        "principal": "cli",
        "endpoint": "cli export records",
        "category": "security_events",
    }


def test_no_checkpoint_no_export(cli: Cli, ledger: Ledger, tmp_path: Path) -> None:
    ledger.appends.append([ledger.appends.prepare(event())], "bot")
    where = tmp_path / "exports"
    where.mkdir()
    code, _, err = _run(cli, "export", "records", "--out", str(where / "x.csv"))
    assert code == 2
    assert "no checkpoint" in err
    assert list(where.iterdir()) == []
    assert _run(cli, "export")[0] == 2  # the mirror form still needs --mirror


@pytest.mark.process
def test_the_real_program_exports_and_checks_with_its_exit_codes(
    ledger: Ledger, settings: Settings, filled: dict[str, list[int]], tmp_path: Path
) -> None:
    """The installed entry point end to end (argument parsing, exit codes, no traceback)."""
    env = env_for(settings.database_url, settings.keys_dir)
    out = tmp_path / "out" / "sec.jsonl"
    out.parent.mkdir()
    made = run_program(
        "export", "records", "--category", "security_events", "--role", "security_team",
        "--format", "jsonl", "--out", str(out), env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = ledger.log.verifier_key()
    checked = run_program("verify-export", str(out), "--verifier-key", key)  # no database, no keys
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: 3 jsonl records")
    out.write_bytes(out.read_bytes().replace(b"security_events", b"security_eventz", 1))
    broken = run_program("verify-export", str(out), "--verifier-key", key)
    assert broken.returncode == 1
    assert broken.stderr.startswith("EXPORT CHECK FAILED: seq ")
    assert "Traceback" not in broken.stderr
    missing = run_program("verify-export", str(tmp_path / "nope.csv"), "--verifier-key", key)
    assert_one_line_error(missing)
    refused = run_program(
        "export", "records", "--category", "nope", "--out", str(out) + "2", env=env
    )
    assert "unknown category" in assert_one_line_error(refused)
