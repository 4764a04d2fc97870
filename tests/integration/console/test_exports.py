"""The console's downloads (issue #14 item 2), in process, on both backends: a search's
"Download CSV" / "Download JSON Lines" give a ZIP of the records the role may read and its
manifest, which ``audit-ledger verify-export`` checks offline; refusals are recorded and send
an error page; the forms need their CSRF token."""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from audit_ledger.ledger.reads import Query
from tests.support.api import open_ledger, records_read_count
from tests.support.cli import run_cli
from tests.support.console import SECURITY_HEADERS, signed_in
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()


@dataclass(frozen=True)
class Seeded:
    server: InProcessServer
    canary: str
    financial: list[int]


@pytest.fixture(scope="module")
def seeded(server: InProcessServer) -> Seeded:
    canary = f"=canary-{uuid.uuid4().hex[:12]}"
    financial = []
    for i, category in enumerate(["financial_transactions", "security_events"] * 3):
        body = event(category, user_id=f"u-{i}")
        body["data"]["note"] = canary
        created = server.post("/v1/events", json=body, headers=server.headers("writer"))
        assert created.status_code == 201, created.text
        if category == "financial_transactions":
            financial.append(created.json()["seq"])
    with open_ledger(server.settings) as ledger:
        assert ledger.log.checkpoint() is not None
    return Seeded(server, canary, financial)


def _download(seeded: Seeded, role: str, **form: str) -> tuple[int, dict[str, bytes], str]:
    with signed_in(seeded.server, role) as b:
        response = b.post("/console/export", {"csrf": b.csrf(), **form})
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    if response.status_code != 200:
        return response.status_code, {}, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return 200, {n: archive.read(n) for n in archive.namelist()}, ""


def _verify(
    seeded: Seeded,
    files: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    data = next(n for n in files if not n.endswith(".manifest"))
    with open_ledger(seeded.server.settings) as ledger:
        key = ledger.log.verifier_key()
    settings = seeded.server.settings
    return run_cli(
        monkeypatch, capsys, settings, "verify-export", str(tmp_path / data), "--verifier-key", key
    )


def test_an_officer_downloads_csv_that_verifies_offline(
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with open_ledger(seeded.server.settings) as ledger:
        before = records_read_count(ledger)
    code, files, _ = _download(
        seeded, "compliance_officer", category="financial_transactions", format="csv"
    )
    assert code == 200
    assert sorted(files) == ["records.csv", "records.csv.manifest"]
    rows = list(csv.DictReader(io.StringIO(files["records.csv"].decode())))
    assert [int(r["seq"]) for r in rows] == seeded.financial
    assert {r["data.note"] for r in rows} == {"'" + seeded.canary}  # formula guarded
    code, out, err = _verify(seeded, files, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith(f"ok: {len(seeded.financial)} csv records")
    with open_ledger(seeded.server.settings) as ledger:
        assert records_read_count(ledger) == before + 1  # the export: one page, one record
        reads = ledger.reads.page_for(
            ["security_team"], Query("ledger_operations", "records_read", newest_first=True)
        )
    latest = reads.events[0].data
    assert latest is not None
    assert latest["endpoint"] == "POST /console/export"
    assert latest["seqs"] == [[s, s] for s in seeded.financial]  # exact, not first..last


def test_the_auditor_downloads_headers_only(
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, files, _ = _download(seeded, "auditor", format="jsonl", user_id="u-0")
    assert code == 200
    data = files["records.jsonl"]
    assert data.count(b"\n") == 1  # the one event of user u-0, found by its blind index
    assert seeded.canary.encode() not in data
    assert b"u-0" not in data + files["records.jsonl.manifest"]
    assert _verify(seeded, files, tmp_path, monkeypatch, capsys)[0] == 0


def test_a_refused_download_is_an_error_page_and_recorded(seeded: Seeded) -> None:
    code, files, text = _download(
        seeded, "compliance_officer", category="security_events", format="csv"
    )
    assert code == 403
    assert not files
    assert seeded.canary not in text
    with open_ledger(seeded.server.settings) as ledger:
        refused = ledger.reads.page_for(
            ["security_team"], Query("ledger_operations", "read_refused", newest_first=True)
        )
    assert refused.events[0].data == {
        "principal": "p-compliance_officer",
        "endpoint": "POST /console/export",
        "category": "security_events",
    }


def test_the_form_needs_its_csrf_token_and_a_known_format(seeded: Seeded) -> None:
    with signed_in(seeded.server, "compliance_officer") as b:
        assert b.post("/console/export", {"csrf": "forged", "format": "csv"}).status_code == 403
        bad = b.post("/console/export", {"csrf": b.csrf(), "format": "xlsx"})
        assert bad.status_code == 422
        search = b.get("/console/search")
        assert 'formaction="/console/export" name="format" value="csv"' in search.text
