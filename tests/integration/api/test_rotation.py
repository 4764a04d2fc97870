"""A KEK rotation by the real CLI while a server runs (in the test process, on its own
ledger): it reads keys re-wrapped by a KEK it has never loaded, and wraps the next new key with
the new KEK — no restart needed."""

from __future__ import annotations

from audit_ledger.settings import Settings
from tests.integration.api.conftest import InProcessServer, run_cli
from tests.support.api import open_ledger
from tests.support.factories import event


def test_server_reads_and_writes_across_a_rotation(
    app_server: InProcessServer, settings: Settings
) -> None:
    with open_ledger(settings) as ledger:  # appended here: the server has none of these cached
        raws = [event("financial_transactions", user_id=u) for u in range(4)]
        ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        old_kek = ledger.keys.provider.kek_id

    rotated = run_cli(settings, "keys", "rotate-kek")
    assert rotated.returncode == 0, rotated.stderr

    r = app_server.get(
        "/v1/events",
        params={"category": "financial_transactions"},
        headers=app_server.headers("compliance_officer"),
    )
    assert r.status_code == 200, r.text
    events = [e for e in r.json()["events"] if e["header"]["writer"] == "bot"]
    assert len(events) == 4
    assert {e["payload_state"] for e in events} == {"present"}
    assert sorted(e["data"]["user_id"] for e in events) == [0, 1, 2, 3]

    r = app_server.post(
        "/v1/events",
        json=event("data_privacy_events", user_id=9090),
        headers=app_server.headers("writer"),
    )
    assert r.status_code == 201, r.text
    with open_ledger(settings) as ledger:
        keks = {k.kek_id for k in ledger.store.iter_keys() if k.wrapped is not None}
        assert keks == {ledger.keys.provider.kek_id}
        assert old_kek not in keks
        assert ledger.verification.run().ok
