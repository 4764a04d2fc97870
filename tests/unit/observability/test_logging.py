"""Operational logging: rotated-file cleanup per tier, correlation ids, tier routing, one JSON
line per event, and the error line (with correlation id, without the message) of a 500."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from audit_ledger.api.app import create_app
from audit_ledger.observability.loggers import get_logger
from audit_ledger.observability.logging import (
    TIER_RETENTION_DAYS,
    cleanup_rotated,
    configure_logging,
    correlation_id_from,
)

DAY = 86_400
NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15) so ages are exact


def _age(path: Path, days: float, now: float = NOW) -> Path:
    path.write_text("{}\n", encoding="utf-8")
    when = now - days * DAY
    os.utime(path, (when, when))
    return path


# --- cleanup_rotated ----------------------------------------------------------------------------


def test_retention_days_per_tier() -> None:
    assert TIER_RETENTION_DAYS == {"application": 30, "security": 90, "performance": 7, "error": 60}


@pytest.mark.parametrize("per_process", [False, True], ids=["single", "per-process"])
def test_cleanup_deletes_rotated_files_past_their_tier_retention(
    tmp_path: Path, per_process: bool
) -> None:
    # Per-process files of a running process (this one): its live files are never deleted.
    stem = f"{{tier}}.{os.getpid()}.log" if per_process else "{tier}.log"
    expired, kept = set(), set()
    for tier, days in TIER_RETENTION_DAYS.items():
        base = stem.format(tier=tier)
        expired.add(_age(tmp_path / f"{base}.2026-01-01", days + 1))
        expired.add(_age(tmp_path / f"{base}.2026-01-02", days * 3))
        kept.add(_age(tmp_path / f"{base}.2026-01-03", days - 1))
        kept.add(_age(tmp_path / f"{base}.2026-01-04", 0.5))
        # The live file is never deleted, however old its mtime.
        kept.add(_age(tmp_path / base, 10 * days))
    # Files of no known tier are not this job's business.
    kept.add(_age(tmp_path / "audit.log.2020-01-01", 3000))
    kept.add(_age(tmp_path / "notes.txt", 3000))
    kept.add(_age(tmp_path / "unrelated.log.2020-01-01", 3000))

    deleted = cleanup_rotated(tmp_path, now=NOW)

    assert set(deleted) == expired
    assert set(tmp_path.iterdir()) == kept


def test_cleanup_deletes_old_live_files_of_dead_workers(tmp_path: Path) -> None:
    """``serve --workers N`` writes ``<tier>.<pid>.log``; only the owning worker rotates it, so
    after a restart the old workers' files would stay forever. Past retention and with their
    process gone, they go; a live process's file, however idle, stays."""
    dead_pid = 4_194_305  # above Linux's largest pid_max: no such process
    dead = _age(tmp_path / f"performance.{dead_pid}.log", 8)
    dead_young = _age(tmp_path / f"security.{dead_pid}.log", 89)
    alive = _age(tmp_path / f"performance.{os.getpid()}.log", 100)
    single = _age(tmp_path / "performance.log", 100)
    assert cleanup_rotated(tmp_path, now=NOW) == [dead]
    assert dead_young.exists()
    assert alive.exists()
    assert single.exists()


def test_cleanup_tier_boundaries_differ(tmp_path: Path) -> None:
    """8 days old: only performance's rotated file goes; 31: application too; 61: error; 91: all."""
    for tier in TIER_RETENTION_DAYS:
        for days in (8, 31, 61, 91):
            _age(tmp_path / f"{tier}.log.age{days}", days)
    deleted = {p.name for p in cleanup_rotated(tmp_path, now=NOW)}
    assert deleted == {
        "performance.log.age8",
        "performance.log.age31",
        "performance.log.age61",
        "performance.log.age91",
        "application.log.age31",
        "application.log.age61",
        "application.log.age91",
        "error.log.age61",
        "error.log.age91",
        "security.log.age91",
    }


def test_cleanup_uses_the_clock_by_default(tmp_path: Path) -> None:
    now = time.time()
    old = _age(tmp_path / "performance.log.2026-01-01", 8, now=now)
    young = _age(tmp_path / "performance.log.2026-01-09", 6, now=now)
    assert cleanup_rotated(tmp_path) == [old]
    assert young.exists()


def test_cleanup_of_a_missing_directory_is_a_no_op(tmp_path: Path) -> None:
    assert cleanup_rotated(tmp_path / "absent") == []


# --- correlation ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", ["abc", "req-42", "a.b:c_d-e", "0" * 128, "550e8400-e29b-41d4-a716-446655440000"]
)
def test_plain_correlation_ids_are_kept(token: str) -> None:
    assert correlation_id_from(token) == token


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        "x" * 129,
        "has space",
        "new\nline",
        "trailing-newline\n",
        "\r\ninjected",
        'quo"te',
        "semi;colon",
        "br{ace}",
        "tab\there",
        "ünïcode",
        "nul\x00byte",
        '\n{"level":"critical"}',
    ],
)
def test_bad_correlation_ids_are_replaced(bad: str | None) -> None:
    generated = correlation_id_from(bad)
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert generated != correlation_id_from(bad)  # fresh each time


def test_fresh_correlation_ids_never_repeat_across_blocks_and_threads() -> None:
    """Ids come from blocks of OS randomness (one system call per 256): every id is handed out
    once, across block boundaries and from concurrent threads."""
    seen: list[str] = []

    def take() -> None:
        seen.extend(correlation_id_from(None) for _ in range(700))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 4200
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in seen)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_correlation_ids() -> None:
    correlation_id_from(None)  # the parent holds a block it has barely used
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.close(read)
        os.write(write, " ".join(correlation_id_from(None) for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split())
    os.waitpid(child, 0)
    parents = {correlation_id_from(None) for _ in range(5)}
    assert len(childs) == 5
    assert not childs & parents


# --- configure_logging: tiers, JSON lines ------------------------------------------------------


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_tiers_route_to_their_files(logs: Path) -> None:
    get_logger("application").info("app_info", seq=1)
    get_logger("security").warning("auth_failed", reason="unknown")
    get_logger("performance").info("http_request", route="/v1/events")
    get_logger("application").error("app_error", error="StorageError")
    logging.getLogger("audit_ledger.application.scheduler").info("job %s ran", "verify")
    logging.getLogger("some.library").error("library error")
    logging.getLogger("some.library").warning("library warning")

    events = {
        tier: [r["event"] for r in _lines(logs / f"{tier}.log")] for tier in TIER_RETENTION_DAYS
    }
    assert events["application"] == ["app_info", "app_error", "job verify ran"]
    assert events["security"] == ["auth_failed"]
    assert events["performance"] == ["http_request"]
    assert events["error"] == ["app_error", "library error"]
    security = _lines(logs / "security.log")[0]
    assert security["level"] == "warning"
    assert security["logger"] == "audit_ledger.security"
    assert security["timestamp"].endswith("Z")
    assert logging.getLogger("uvicorn.access").disabled


def test_configure_is_idempotent(logs: Path) -> None:
    configure_logging(logs)
    get_logger("application").info("once")
    assert [r["event"] for r in _lines(logs / "application.log")] == ["once"]


def test_per_process_files(tmp_path: Path, logs: Path) -> None:
    configure_logging(logs, per_process=True)
    get_logger("security").warning("x")
    assert (logs / f"security.{os.getpid()}.log").exists()
    assert not (logs / "security.log").exists()


def test_a_newline_in_a_value_cannot_forge_a_line(logs: Path) -> None:
    forged = 'abc\n{"level":"critical","event":"FORGED"}\r\n'
    get_logger("application").info("event_appended", event_type=forged, correlation_id=forged)
    text = (logs / "application.log").read_text(encoding="utf-8")
    assert text.count("\n") == 1
    (line,) = _lines(logs / "application.log")
    assert line["event_type"] == forged
    assert line["level"] == "info"


def test_rotated_files_are_named_as_cleanup_expects(logs: Path) -> None:
    """A real rollover of each tier produces a file cleanup_rotated recognises and ages out."""

    def one_line_per_tier(event: str) -> None:
        for tier in TIER_RETENTION_DAYS:
            level = logging.ERROR if tier == "error" else logging.INFO
            get_logger("application" if tier == "error" else tier).log(level, event)

    one_line_per_tier("before_rollover")
    # The error tier's file hangs on the root logger, each other tier's on its own logger.
    owners = [
        logging.getLogger(),
        *(logging.getLogger(f"audit_ledger.{t}") for t in TIER_RETENTION_DAYS),
    ]
    handlers = [
        h
        for owner in owners
        for h in owner.handlers
        if isinstance(h, logging.handlers.TimedRotatingFileHandler)
    ]
    assert len(handlers) == len(TIER_RETENTION_DAYS)
    for handler in handlers:
        handler.doRollover()
    one_line_per_tier("after_rollover")
    rotated = sorted(p for p in logs.iterdir() if ".log." in p.name)
    assert len(rotated) == len(TIER_RETENTION_DAYS), rotated
    for path in rotated:
        when = time.time() - 100 * DAY
        os.utime(path, (when, when))
    assert sorted(cleanup_rotated(logs)) == rotated
    assert {p.name for p in logs.iterdir()} == {f"{t}.log" for t in TIER_RETENTION_DAYS}


# --- the 500 path -------------------------------------------------------------------------------


def _failing_app() -> FastAPI:
    app = create_app()  # no lifespan runs: these routes need no ledger

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret-canary-in-the-message")

    return app


def _get(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One in-process request; an exception escaping the app would be raised here."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def test_an_unexpected_error_is_a_500_with_correlation_id_and_an_error_line(logs: Path) -> None:
    r = _get(_failing_app(), "/boom", headers={"X-Correlation-ID": "boom-7"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-correlation-id"] == "boom-7"
    assert r.json()["type"].endswith(":internal")
    assert "secret-canary" not in r.text

    (error,) = _lines(logs / "error.log")
    assert error["event"] == "request_failed"
    assert error["level"] == "error"
    assert error["correlation_id"] == "boom-7"
    assert error["route"] == "/boom"
    assert error["status"] == 500
    assert error["error"] == "RuntimeError"
    assert any("test_logging.py" in frame and "boom" in frame for frame in error["where"])
    (access,) = _lines(logs / "performance.log")
    assert access["status"] == 500
    assert access["correlation_id"] == "boom-7"
    for path in logs.iterdir():
        assert "secret-canary" not in path.read_text(encoding="utf-8"), path.name


def test_a_4xx_is_not_an_error_line(logs: Path) -> None:
    assert _get(_failing_app(), "/no-such-route").status_code == 404
    assert _lines(logs / "error.log") == []
    (access,) = _lines(logs / "performance.log")
    assert access["route"] == "unmatched"
    assert access["status"] == 404


def test_an_invented_method_is_logged_as_other(logs: Path) -> None:
    # The live server's HTTP parser (httptools) refuses invented methods before the app sees
    # them; an ASGI server that passes them on must still not log a client-chosen string.
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=_failing_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request("SECRET-CANARY-METHOD", "/healthz")

    assert asyncio.run(go()).status_code == 405
    (access,) = _lines(logs / "performance.log")
    assert access["method"] == "OTHER"
    for path in logs.iterdir():
        assert "SECRET-CANARY" not in path.read_text(encoding="utf-8"), path.name


def test_log_files_are_created_0600(logs: Path) -> None:
    """Issue #12: tier files were 0644 (readable by every account on the host)."""
    for tier in TIER_RETENTION_DAYS:
        level = logging.ERROR if tier == "error" else logging.INFO
        get_logger("application" if tier == "error" else tier).log(level, "x")
    files = sorted(logs.glob("*.log"))
    assert len(files) == len(TIER_RETENTION_DAYS)
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o600 for p in files}


def test_a_log_file_left_0644_is_tightened(tmp_path: Path, logs: Path) -> None:
    old = logs / "security.log"
    old.write_text("", encoding="utf-8")
    old.chmod(0o644)
    configure_logging(logs)  # a restarted service
    get_logger("security").warning("x")
    assert old.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "value",
    [2**70, -(2**64), "lone \ud800 surrogate", {1: "non-string key"}, "line\nbreak\x00\x1f"],
)
def test_any_value_renders_as_one_line_of_json(logs: Path, value: object) -> None:
    """A value no JSON library renders natively (a huge integer, a lone surrogate, a key that
    is not a string, control characters) still makes one line of valid JSON."""
    get_logger("application").info("odd_value", value=value)
    (line,) = (logs / "application.log").read_text(encoding="utf-8").splitlines()
    parsed = json.loads(line)
    assert parsed["event"] == "odd_value"
    expected = json.loads(json.dumps(value))
    assert parsed["value"] == expected
