"""Tampering as a database superuser can: a populated log built once per module (a template)
and fresh copies of it with the guard triggers out of the way (dropped on SQLite, ``DISABLE
TRIGGER ALL`` on PostgreSQL), plus the small edits the tamper tests make."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from audit_ledger.core.merkle import CompactRange
from audit_ledger.crypto.keys import init_keys
from audit_ledger.ledger.service import Ledger
from audit_ledger.ledger.verify_entries import Problem
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage.engine import create_engine_for_url
from tests.conftest import ORIGIN, create_pg_database, drop_pg_database, pg_url

TABLES = (
    "entries",
    "entry_refs",
    "tree_nodes",
    "payloads",
    "payload_purges",
    "checkpoints",
    "data_keys",
    "ledger_head",
    "checkpoint_cosignatures",
    "principals",
)


@dataclass(frozen=True)
class Template:
    backend: str
    location: str  # SQLite file path or PostgreSQL database name
    keys_dir: Path


@contextmanager
def populated_template(
    request: pytest.FixtureRequest,
    root: Path,
    populate: Callable[[Ledger], None],
    check: Callable[[Ledger], None],
) -> Iterator[Template]:
    """A log populated once per module (``request.param`` names the backend), to be copied by
    each test; ``check`` runs on it before any test does."""
    keys_dir = root / "keys"
    init_keys(keys_dir, ORIGIN)
    backend = str(request.param)
    if backend == "sqlite":
        path = root / "populated.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        location, url = str(path), f"sqlite:///{path}"
    else:
        location = create_pg_database(template=request.getfixturevalue("pg_template"))
        url = pg_url(location)
    try:
        ledger = Ledger.open(tamper_settings(url, keys_dir))
        try:
            populate(ledger)
            check(ledger)
        finally:
            ledger.close()  # no connection may stay open on a PostgreSQL template
        yield Template(backend, location, keys_dir)
    finally:
        if backend == "postgresql":
            drop_pg_database(location)


def tamper_settings(url: str, keys_dir: Path) -> Settings:
    return load_settings(database_url=url, keys_dir=keys_dir, checkpoint_origin=ORIGIN)


@dataclass
class Case:
    """One fresh copy of the populated log, guards disabled."""

    backend: str
    url: str
    keys_dir: Path
    engine: Engine
    ledger: Ledger

    def run(self, sql: str, **params: Any) -> None:
        with self.engine.connect() as conn, conn.begin():
            conn.execute(text(sql), params)

    def one(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn, conn.begin():
            value = conn.execute(text(sql), params).scalar_one()
        return bytes(value) if isinstance(value, memoryview) else value

    def problem(self) -> Problem:
        report = self.ledger.verification.run()
        assert report.problem is not None, "tampering went unnoticed"
        return report.problem

    def cli_verify(self) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_LEDGER_")}
        env |= {
            "AUDIT_LEDGER_DATABASE_URL": self.url,
            "AUDIT_LEDGER_KEYS_DIR": str(self.keys_dir),
            "AUDIT_LEDGER_CHECKPOINT_ORIGIN": ORIGIN,
        }
        return subprocess.run(
            [sys.executable, "-m", "audit_ledger.cli", "verify"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@contextmanager
def tampering_copy(backend: str, location: str, keys_dir: Path, tmp_path: Path) -> Iterator[Case]:
    """A fresh copy of a populated log (SQLite file or PostgreSQL template database) with the
    guard triggers out of the way, as a database superuser can have it."""
    if backend == "sqlite":
        path = tmp_path / "copy.sqlite3"
        for suffix in ("", "-wal"):
            if Path(location + suffix).exists():
                shutil.copyfile(location + suffix, str(path) + suffix)
        url, name = f"sqlite:///{path}", None
    else:
        name = create_pg_database(template=location)
        url = pg_url(name)
    engine = create_engine_for_url(url)
    ledger = Ledger.open(tamper_settings(url, keys_dir))
    try:
        with engine.connect() as conn, conn.begin():
            if backend == "sqlite":
                triggers = conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                ).scalars()
                for trigger in list(triggers):
                    conn.execute(text(f'DROP TRIGGER "{trigger}"'))
            else:
                for table in TABLES:
                    conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER ALL"))
        yield Case(backend, url, keys_dir, engine, ledger)
    finally:
        ledger.close()
        engine.dispose()
        if name is not None:
            drop_pg_database(name)


def flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def alter(value: str, pos: int) -> str:
    """Change one character (to a digit, which keeps UUIDs and timestamps well-formed)."""
    new = "1" if value[pos] != "1" else "2"
    return value[:pos] + new + value[pos + 1 :]


def leaf_hashes(case: Case, below: int) -> list[bytes]:
    with case.engine.connect() as conn, conn.begin():
        rows = conn.execute(
            text("SELECT leaf_hash FROM entries WHERE seq < :n ORDER BY seq"), {"n": below}
        ).scalars()
        return [bytes(h) for h in rows]


def set_head(case: Case, hashes: list[bytes], last_recorded_at: str) -> None:
    frontier = CompactRange()
    frontier.extend(hashes)
    case.run(
        "UPDATE ledger_head SET size = :n, last_leaf_hash = :h, last_recorded_at = :r,"
        " frontier = :f WHERE id = 1",
        n=len(hashes),
        h=hashes[-1],
        r=last_recorded_at,
        f=frontier.to_bytes(),
    )


def delete_entries(case: Case, where: str, **params: Any) -> None:
    for table in ("entry_refs", "payloads", "payload_purges", "entries"):
        case.run(f"DELETE FROM {table} WHERE {where}", **params)  # noqa: S608 - test SQL
