"""Operational logs of a real ``audit-ledger serve`` (and the CLI): no secrets or personal data
anywhere (logs, stderr, metric labels), correlation ids echoed and bound to every line, one JSON
line per log event whatever the client sends, and each tier in its own file.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.integration.api.conftest import cli_env
from tests.integration.api.test_metrics import ObservedServer, observed_server
from tests.support.factories import event

# Log files and stderr of a serving process: configure_logging is process-wide.
pytestmark = pytest.mark.process
GENERATED_ID = re.compile(r"[0-9a-f]{32}\Z")


@pytest.fixture
def observed(settings: Settings, tmp_path: Path) -> Iterator[ObservedServer]:
    server = observed_server(settings, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- helpers ------------------------------------------------------------------------------------


def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str]]:
    """Send bytes the way a hostile client might (no client-side header checks)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status_line, _, rest = response.partition(b"\r\n")
    header_block = rest.split(b"\r\n\r\n", 1)[0]
    headers = {}
    for line in header_block.split(b"\r\n"):
        name, _, val = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = val.strip()
    return int(status_line.split()[1]), headers


def log_files(log_dir: Path) -> dict[str, str]:
    return {
        p.name: p.read_text(encoding="utf-8") for p in sorted(log_dir.rglob("*")) if p.is_file()
    }


def json_lines(content: str) -> list[dict[str, Any]]:
    """Every line of a tier file is one JSON object."""
    out = []
    for line in content.splitlines():
        parsed = json.loads(line)
        assert isinstance(parsed, dict), line
        out.append(parsed)
    return out


def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


# --- canaries: no secret or personal value reaches a log, stderr or a metric label -------------


def _unique_amount() -> str:
    digits = str(uuid.uuid4().int)
    return f"{digits[:7]}.{digits[7:9]}"


def _key_material(keys_dir: Path) -> list[str]:
    found = []
    for path in keys_dir.iterdir():
        content = path.read_text(encoding="ascii").strip()
        found.append(content)
        if content.startswith("PRIVATE+KEY+"):
            # "PRIVATE+KEY+<name>+<hash>+<base64>": the base64 part on its own too.
            found.append(content.split("+", 4)[-1])
    return found


def test_no_secrets_in_logs_stderr_or_metrics(
    observed: ObservedServer, settings: Settings, tmp_path: Path
) -> None:
    server = observed
    log_dir = tmp_path / "logs"
    users = [f"u-cnry-{uuid.uuid4().hex[:12]}" for _ in range(27)]
    orders = [f"ORD-CNRY-{uuid.uuid4().hex[:12]}" for _ in range(27)]
    amounts = [_unique_amount() for _ in range(26)]
    reasons = [f"case-cnry-{uuid.uuid4().hex[:12]}" for _ in range(4)]
    forged_tokens = [f"alt_{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}" for _ in range(3)]
    junk_tokens = [f"tok-cnry-{uuid.uuid4().hex}" for _ in range(3)]
    canaries: list[str] = [
        *server.tokens.values(),
        *_key_material(settings.keys_dir),
        *users,
        *orders,
        *amounts,
        *reasons,
        *forged_tokens,
        *junk_tokens,
    ]

    writer, officer = server.headers("writer"), server.headers("compliance_officer")
    privacy, admin = server.headers("privacy_officer"), server.headers("admin")
    seqs: list[int] = []
    with httpx.Client(base_url=server.url, timeout=30) as c:
        # Appends: singles and batches, all three categories.
        fin = [event(user_id=users[i], order_id=orders[i], amount=amounts[i]) for i in range(16)]
        for raw in fin[:8]:
            r = c.post("/v1/events", json=raw, headers=writer)
            assert r.status_code == 201, r.text
            seqs.append(r.json()["seq"])
        for start in (8, 12):
            r = c.post("/v1/events/batch", json={"events": fin[start : start + 4]}, headers=writer)
            assert r.status_code == 201, r.text
        others = [event("data_privacy_events", user_id=u) for u in users[16:19]]
        others += [event("security_events", user_id=u) for u in users[19:27]]
        assert (
            c.post("/v1/events/batch", json={"events": others}, headers=writer).status_code == 201
        )
        # A replay and a conflict carrying personal data.
        assert c.post("/v1/events", json=fin[0], headers=writer).status_code == 200
        clash = {**fin[1], "data": {**fin[1]["data"], "amount": amounts[16]}}
        assert c.post("/v1/events", json=clash, headers=writer).status_code == 409

        # Reads: by seq, lists, searches by identifiers (in bodies, as the API wants).
        for seq in seqs[:4]:
            assert c.get(f"/v1/events/{seq}", headers=officer).status_code == 200
        r = c.get("/v1/events", params={"category": "financial_transactions"}, headers=officer)
        assert r.status_code == 200
        assert amounts[0] in r.text  # the officer does see the plaintext; logs must not
        for i in range(4):
            for search in ({"user_id": users[i]}, {"order_id": orders[i]}):
                r = c.post("/v1/events/search", json=search, headers=officer)
                assert r.status_code == 200
        for order in orders[22:]:
            r = c.post("/v1/events/search", json={"order_id": order}, headers=officer)
            assert r.status_code == 200
        for amount in amounts[22:]:
            r = c.get("/v1/events", params={"since": amount}, headers=officer)
            assert r.status_code == 422

        # Erasure (allowed and refused) and legal holds.
        body: dict[str, Any] = {"user_id": users[16], "categories": ["data_privacy_events"]}
        assert c.post("/v1/erasure-requests", json=body, headers=privacy).status_code == 201
        body = {"user_id": users[0], "categories": ["financial_transactions"]}
        assert c.post("/v1/erasure-requests", json=body, headers=privacy).status_code == 409
        holds = [
            {"scope": "subject", "user_id": users[2], "reason": reasons[0]},
            {"scope": "order", "order_id": orders[3], "reason": reasons[1]},
        ]
        ids = []
        for placed in holds:
            r = c.post("/v1/legal-holds", json=placed, headers=admin)
            assert r.status_code == 201, r.text
            ids.append(r.json()["hold_id"])
        assert c.get("/v1/legal-holds", headers=admin).status_code == 200
        assert c.post(f"/v1/legal-holds/{ids[0]}/release", headers=admin).status_code == 200

        # Bad requests that carry the secrets in every place a client can put them.
        bad = event(user_id=users[4], order_id=orders[4])
        bad["data"]["amount"] = 1.5  # a float: 422
        assert c.post("/v1/events", json=bad, headers=writer).status_code == 422
        bad_batch = {"events": [event(user_id=users[5]), {**event(), "nope": reasons[2]}]}
        assert c.post("/v1/events/batch", json=bad_batch, headers=writer).status_code == 422
        truncated = b'{"event_id": "' + orders[5].encode() + b'", "data": {"amount": "'
        r = c.post(
            "/v1/events",
            content=truncated + amounts[17].encode(),
            headers={**writer, "Content-Type": "application/json"},
        )
        assert r.status_code == 422
        r = c.get("/v1/events", params={"user_id": users[6], "cursor": orders[6]}, headers=officer)
        assert r.status_code == 422
        assert c.get(f"/v1/events/{users[7]}", headers=officer).status_code == 422
        assert c.get(f"/v1/{orders[7]}/{amounts[18]}").status_code == 404
        body = {"user_id": users[8], "categories": "not-a-list"}
        assert c.post("/v1/erasure-requests", json=body, headers=privacy).status_code == 422
        hold = {"scope": "subject", "user_id": users[9], "reason": reasons[3], "extra": 1}
        assert c.post("/v1/legal-holds", json=hold, headers=admin).status_code == 422
        for token in [*forged_tokens, *junk_tokens]:
            h = {"Authorization": f"Bearer {token}"}
            assert c.post("/v1/events", json=event(), headers=h).status_code == 401
        assert c.get("/v1/legal-holds", headers=writer).status_code == 403  # valid token, 403
        h = {**officer, "X-Correlation-ID": f"not a plain token {users[10]}"}
        r = c.get("/v1/events", params={"category": "financial_transactions"}, headers=h)
        assert GENERATED_ID.match(r.headers["x-correlation-id"])
    # A method name is a client-supplied string too: the server's parser (httptools) refuses
    # an invented one before the app sees it (the app's own labelling as OTHER is tested in
    # tests/unit/observability/test_logging.py).
    status, _ = raw_request(
        server.port,
        f"{users[11]} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 400

    # The CLI: a bulk import with personal data, a bad line that carries some, a new principal.
    env = {**cli_env(settings), "AUDIT_LEDGER_LOG_DIR": str(log_dir)}
    jsonl = tmp_path / "import.jsonl"
    rows = [
        event(user_id=users[12 + i], order_id=orders[12 + i], amount=amounts[19 + i])
        for i in range(3)
    ]
    bad_row = event(user_id=users[15], order_id=orders[15])
    bad_row["data"]["amount"] = 2.5
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in [*rows, bad_row]), encoding="utf-8")
    cli = [sys.executable, "-m", "audit_ledger.cli"]
    imported = subprocess.run(
        [*cli, "append", str(jsonl)], env=env, capture_output=True, text=True, check=False
    )
    assert imported.returncode == 2, imported.stderr
    assert "line 4" in imported.stderr
    added = subprocess.run(
        [*cli, "principals", "add", "cnry-auditor", "--role", "auditor"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    cli_token = added.stdout.strip().splitlines()[-1]
    assert cli_token.startswith("alt_")
    canaries.append(cli_token)
    r = httpx.get(
        server.url + "/v1/log/checkpoint", headers={"Authorization": f"Bearer {cli_token}"}
    )
    assert r.status_code == 200  # the new token works (and is now in a request header)

    # Metrics: label values and the whole text.
    metrics_text = httpx.get(server.url + "/metrics").text
    label_values = {
        v
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        for v in sample.labels.values()
    }
    server.stop()

    assert len(set(canaries)) >= 100, len(set(canaries))
    assert all(len(c) >= 9 for c in canaries)
    places = {
        "server stdout/stderr": server.log.read_text(encoding="utf-8") if server.log else "",
        "cli append stdout": imported.stdout,
        "cli append stderr": imported.stderr,
        "cli principals stderr": added.stderr,
        "/metrics": metrics_text,
        "metric label values": "\n".join(sorted(label_values)),
        **{f"log file {name}": content for name, content in log_files(log_dir).items()},
    }
    assert any(name.startswith("log file application") for name in places), places.keys()
    leaks = [
        (place, canary)
        for place, content in places.items()
        for canary in canaries
        if canary in content
    ]
    assert not leaks, leaks
    # The log files were really written to (the test would pass vacuously otherwise).
    files = log_files(log_dir)
    assert files["application.log"].count('"event_appended"') >= 8
    assert files["security.log"].count('"authentication_failed"') == 6
    assert files["performance.log"].count('"http_request"') > 40


# --- correlation ids, line shapes, forged lines, tiers ------------------------------------------


def test_correlation_ids_and_line_shapes(observed: ObservedServer, tmp_path: Path) -> None:
    server = observed
    log_dir = tmp_path / "logs"
    writer = server.headers("writer")
    marker = f"FORGED-{uuid.uuid4().hex}"
    forged = '\n{"level":"critical","event":"' + marker + '"}'
    with httpx.Client(base_url=server.url, timeout=30) as c:
        # Echoed when plain, generated when absent or malformed.
        r = c.get("/healthz", headers={"X-Correlation-ID": "req-42.a:b_c"})
        assert r.headers["x-correlation-id"] == "req-42.a:b_c"
        r = c.get("/healthz")
        assert GENERATED_ID.match(r.headers["x-correlation-id"])
        for bad in ("has spaces in it", "x" * 129, "semi;colon", "", 'quote"d'):
            r = c.get("/healthz", headers={"X-Correlation-ID": bad})
            assert GENERATED_ID.match(r.headers["x-correlation-id"]), bad
        # Errors carry it too.
        r = c.get("/v1/events/1", headers={"X-Correlation-ID": "err-1"})
        assert r.status_code == 401
        assert r.headers["x-correlation-id"] == "err-1"

        # A compliance event: its application line names seq, category, type, correlation id.
        raw = event(payment_method="qris" + forged)  # data is never logged
        raw["correlation_id"] = 'x","level":"critical","event":"' + marker
        r = c.post("/v1/events", json=raw, headers={**writer, "X-Correlation-ID": "append-1"})
        assert r.status_code == 201, r.text
        appended_seq = r.json()["seq"]
        batch = {"events": [event(), event("security_events")]}
        r = c.post(
            "/v1/events/batch", json=batch, headers={**writer, "X-Correlation-ID": "batch-1"}
        )
        assert r.status_code == 201

        # Query strings never reach the access log.
        officer = server.headers("compliance_officer")
        params = {"category": "financial_transactions", "cursor": "zzz-cursor-value"}
        r = c.get("/v1/events", params=params, headers={**officer, "X-Correlation-ID": "list-1"})
        assert r.status_code == 422

        # Newlines in client-supplied strings: an event_type, a path.
        r = c.post(
            "/v1/events",
            json={**event(), "event_type": "payment" + forged},
            headers={**writer, "X-Correlation-ID": "forge-1"},
        )
        assert r.status_code == 422
        r = c.get("/v1/events/%0A%7B%22level%22%3A%22critical%22%7D", headers=officer)
        assert r.status_code == 422
        path_id = r.headers["x-correlation-id"]
        # Auth failures (security tier).
        r = c.post("/v1/events", json=event(), headers={"X-Correlation-ID": "noauth-1"})
        assert r.status_code == 401
        r = c.get("/v1/log/leaves?start=0&end=1", headers={**writer, "X-Correlation-ID": "deny-1"})
        assert r.status_code == 403

    # A correlation header with a raw newline: the forged line must not appear.
    forged_head = (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"X-Correlation-ID: a{forged}\r\n\r\n"
    ).encode()
    status, headers = raw_request(server.port, forged_head)
    assert status in {200, 400}
    if status == 200:
        assert GENERATED_ID.match(headers["x-correlation-id"])
    # obs-fold continuation: must not smuggle a second value through either.
    folded = (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f'X-Correlation-ID: a\r\n {{"level":"critical","event":"{marker}"}}\r\n\r\n'
    ).encode()
    status, headers = raw_request(server.port, folded)
    assert status in {200, 400}
    if status == 200:
        assert headers["x-correlation-id"] in {"a"} or GENERATED_ID.match(
            headers["x-correlation-id"]
        )

    files = log_files(log_dir)
    stdout = server.log.read_text(encoding="utf-8") if server.log else ""
    tiers = {name: json_lines(files[f"{name}.log"]) for name in ("application", "performance")}
    tiers["security"] = json_lines(files["security.log"])
    for content in [stdout, *files.values()]:
        for line in content.splitlines():
            assert not line.lstrip().startswith('{"level":"critical"'), line
            assert '"level": "critical"' not in line, line
            assert '"level":"critical"' not in line, line

    def lines_with(cid: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (tier, line)
            for tier, lines in tiers.items()
            for line in lines
            if line.get("correlation_id") == cid
        ]

    # The single append: one application line, one access line; JSON injection stayed data.
    found = lines_with("append-1")
    assert sorted(t for t, _ in found) == ["application", "performance"], found
    app_line = next(line for t, line in found if t == "application")
    assert app_line["event"] == "event_appended"
    assert app_line["level"] == "info"
    assert app_line["seq"] == appended_seq
    assert app_line["category"] == "financial_transactions"
    assert app_line["event_type"] == "payment_completed"
    assert app_line["event_correlation_id"] == raw["correlation_id"]
    assert app_line["logger"] == "audit_ledger.application"
    assert "timestamp" in app_line
    assert "data" not in app_line
    assert "qris" not in json.dumps(app_line)
    batch_lines = [line for t, line in lines_with("batch-1") if t == "application"]
    assert len(batch_lines) == 1
    assert batch_lines[0]["types"] == {
        "financial_transactions/payment_completed": 1,
        "security_events/login_failed": 1,
    }
    assert batch_lines[0]["count"] == 2
    assert batch_lines[0]["last_seq"] == batch_lines[0]["first_seq"] + 1

    # Access lines: route template, status, duration; never the query string or raw path.
    access = {line["correlation_id"]: line for line in tiers["performance"]}
    assert access["list-1"]["route"] == "/v1/events"
    assert access["list-1"]["status"] == 422
    assert access["list-1"]["method"] == "GET"
    assert access["append-1"]["route"] == "/v1/events"
    assert access["append-1"]["principal"] == "p-writer"
    assert isinstance(access["append-1"]["duration_ms"], float | int)
    assert access[path_id]["route"] == "/v1/events/{seq}"
    assert access["err-1"]["route"] == "/v1/events/{seq}"
    performance = files["performance.log"]
    for absent in ("cursor", "zzz-cursor-value", "?", "%0A", '/v1/events/1"'):
        assert absent not in performance, absent

    # Each forged request produced exactly one line (its access line), nowhere else.
    for cid in ("forge-1", path_id):
        assert [t for t, _ in lines_with(cid)] == ["performance"], cid
        assert sum(cid in line for line in stdout.splitlines()) == 1, cid
    everything = "\n".join([stdout, *files.values()])
    # The marker only ever appears as (escaped) data inside the append's JSON line.
    marker_lines = [line for line in everything.splitlines() if marker in line]
    assert all('"event_correlation_id"' in line for line in marker_lines), marker_lines
    assert len(marker_lines) == 2  # the application line, and its copy on stdout
    assert files["application.log"].count(marker) == 1

    # Tier routing: auth failures and denials in security.log (not in the application tier).
    # A refused read is also a ledger operation (read_refused, logged after its commit with the
    # same correlation id): the first security line of a request is its refusal.
    security: dict[str, dict[str, Any]] = {}
    for line in tiers["security"]:
        security.setdefault(line.get("correlation_id"), line)
    assert [
        line["event_type"]
        for line in tiers["security"]
        if line.get("correlation_id") == "deny-1" and line["event"] == "ledger_operation"
    ] == ["read_refused"]
    assert security["noauth-1"]["event"] == "authentication_failed"
    assert security["noauth-1"]["reason"] == "missing"
    assert security["noauth-1"]["level"] == "warning"
    assert security["err-1"]["event"] == "authentication_failed"
    assert security["deny-1"]["event"] == "permission_denied"
    assert security["deny-1"]["principal"] == "p-writer"
    assert not any(line["event"] == "authentication_failed" for line in tiers["application"])
    assert all(line["logger"].startswith("audit_ledger.security") for line in tiers["security"])
    assert all(
        line["logger"].startswith("audit_ledger.performance") for line in tiers["performance"]
    )
    # Nothing at error level happened: the error tier is empty (or not created).
    assert not files.get("error.log"), files.get("error.log")


def test_errors_land_in_error_log(settings: Settings, tmp_path: Path) -> None:
    """A failed scheduled verification is logged at error level: security and error tiers."""
    ledger = Ledger.open(settings)
    try:
        ledger.appends.append([ledger.appends.prepare(event()) for _ in range(3)], "writer")
        with ledger.store.engine.begin() as conn:
            # A payload deleted without a recorded purge is tampering (guards off to do it).
            if ledger.store.dialect == "sqlite":
                names = conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                ).scalars()
                for name in list(names):
                    conn.execute(text(f'DROP TRIGGER "{name}"'))
            else:
                conn.execute(text("ALTER TABLE payloads DISABLE TRIGGER ALL"))
            conn.execute(text("DELETE FROM payloads WHERE seq = (SELECT MAX(seq) FROM payloads)"))
    finally:
        ledger.close()
    server = observed_server(settings, tmp_path, AUDIT_LEDGER_SCHEDULER_ENABLED="true")
    log_dir = tmp_path / "logs"
    server.start()

    def failure_logged() -> bool:
        path = log_dir / "error.log"
        # Both verifications (full and incremental) report it.
        return path.exists() and path.read_text(encoding="utf-8").count("verification_failed") >= 2

    def failure_recorded() -> bool:
        # What AuditLedgerVerificationFailed watches (recorded just after the log line).
        page = httpx.get(server.url + "/metrics", timeout=10).text
        return "\nledger_last_verification_success 0.0\n" in page

    try:
        wait_for(failure_logged)
        wait_for(failure_recorded)
    finally:
        server.stop()
    errors = json_lines((log_dir / "error.log").read_text(encoding="utf-8"))
    assert errors, "error.log is empty"
    assert all(line["level"] in {"error", "critical"} for line in errors), errors
    failed = [line for line in errors if line["event"] == "verification_failed"]
    # Once by the full verification, once by the incremental one (issue #15: kind=incremental).
    assert sorted(line.get("kind", "full") for line in failed) == ["full", "incremental"]
    assert {line["logger"] for line in failed} == {"audit_ledger.security"}
    assert len({line["problem"] for line in failed}) == 1
    security = json_lines((log_dir / "security.log").read_text(encoding="utf-8"))
    assert [line["event"] for line in security].count("verification_failed") == 2
    application = (log_dir / "application.log").read_text(encoding="utf-8")
    assert "verification_failed" not in application
    assert "job verify tick" in application


def test_server_errors_are_logged_with_their_correlation_id(
    observed: ObservedServer, settings: Settings, tmp_path: Path
) -> None:
    """A 5xx is an error-level line (error tier) naming the error class, never its message."""
    server = observed
    log_dir = tmp_path / "logs"
    ledger = Ledger.open(settings)
    try:
        with ledger.store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE legal_holds RENAME TO legal_holds_gone"))
    finally:
        ledger.close()
    r = httpx.get(
        server.url + "/v1/legal-holds",
        headers={**server.headers("admin"), "X-Correlation-ID": "boom-1"},
    )
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-correlation-id"] == "boom-1"
    assert "legal_holds" not in r.text
    wait_for((log_dir / "error.log").exists)
    errors = json_lines((log_dir / "error.log").read_text(encoding="utf-8"))
    assert len(errors) == 1, errors
    line = errors[0]
    assert line["level"] == "error"
    assert line["correlation_id"] == "boom-1"
    assert line["status"] == 500
    assert line["route"] == "/v1/legal-holds"
    assert line["error"] == "StorageError"
    access = json_lines((log_dir / "performance.log").read_text(encoding="utf-8"))
    assert [a["status"] for a in access if a["correlation_id"] == "boom-1"] == [500]
