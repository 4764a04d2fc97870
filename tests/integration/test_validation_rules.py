"""The policy's validation rules reach every way in (issue #12 item 5): a single event, a batch
and a bulk import all refuse a negative payment amount and an ``occurred_at`` of 9999-12-31 with
the field named (and the line, for an import), and write nothing; a refund may be negative. On
both backends: the application in this process, and the CLI import in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit_ledger.settings import Settings
from tests.support.api import assert_problem
from tests.support.cli import run_cli
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()
FAR_FUTURE = "9999-12-31T23:59:59Z"


def _payment(amount: object, event_type: str = "payment_completed") -> dict[str, object]:
    raw = event("financial_transactions", amount=amount)
    raw["event_type"] = event_type
    return raw


def _count(server: InProcessServer) -> int:
    page = server.post(
        "/v1/events/search",
        json={"category": "financial_transactions", "limit": 1000},
        headers=server.headers("compliance_officer"),
    ).json()
    return len(page["events"])


def test_single_event_rules(server: InProcessServer) -> None:
    headers = server.headers("writer")
    before = _count(server)
    negative = server.post("/v1/events", json=_payment("-5000.00"), headers=headers)
    assert_problem(negative, 422)
    assert [e["field"] for e in negative.json()["errors"]] == ["data.amount"]
    future = server.post(
        "/v1/events", json={**_payment(5000), "occurred_at": FAR_FUTURE}, headers=headers
    )
    assert_problem(future, 422)
    assert future.json()["errors"] == [
        {"field": "occurred_at", "problem": "must not be later than recorded_at plus 5m"}
    ]
    assert _count(server) == before
    refund = server.post(
        "/v1/events", json=_payment("-5000.00", "payment_refunded"), headers=headers
    )
    assert refund.status_code == 201, refund.text


def test_batch_rules_name_the_event_and_write_nothing(server: InProcessServer) -> None:
    before = _count(server)
    batch = {"events": [_payment(1), {**_payment(2), "occurred_at": FAR_FUTURE}, _payment(-3)]}
    response = server.post("/v1/events/batch", json=batch, headers=server.headers("writer"))
    assert_problem(response, 422)
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"events[1].occurred_at", "events[2].data.amount"}
    assert _count(server) == before


def test_bulk_import_names_the_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    lines = [_payment(1), _payment(2), {**_payment(3), "occurred_at": FAR_FUTURE}, _payment(4)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(raw) + "\n" for raw in lines), encoding="utf-8")
    code, out, err = run_cli(monkeypatch, capsys, settings, "append", str(path))
    assert code == 2, (out, err)
    assert "line 3" in err
    assert "occurred_at: must not be later than recorded_at plus 5m" in err
    lines[2] = _payment(-3)
    path.write_text("".join(json.dumps(raw) + "\n" for raw in lines), encoding="utf-8")
    code, out, err = run_cli(monkeypatch, capsys, settings, "append", str(path))
    assert code == 2, (out, err)
    assert "line 3" in err
    assert "data.amount: must not be negative" in err
