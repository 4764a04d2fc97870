"""Issue #12: a wrong ``kek.key`` (another valid 32-byte key, a wrong backup restored) was
accepted — ``serve`` started, ``/readyz`` said ``"keys": "ok"`` (a constant) and every append
and plaintext read was a 500. Now start-up proves the KEK unwraps live data keys (and the subject
key store holds them), ``serve`` refuses with one line, and ``/readyz`` checks."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

from audit_ledger.crypto.keys import INDEX_FILE, KEK_FILE
from audit_ledger.errors import ConfigError
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.support.cli import assert_one_line_error, cli, env_for
from tests.support.factories import event
from tests.support.servers import ThreadedServer, free_port


def _append_both_scopes(settings: Settings) -> None:
    """A period key (financial) and a subject key (privacy: the key store) in the database."""
    ledger = Ledger.open(settings)
    try:
        raws = [event("financial_transactions"), event("data_privacy_events")]
        ledger.appends.append([ledger.appends.prepare(r) for r in raws], "test")
        assert {k.scope_kind for k in ledger.store.live_key_samples()} == {"period", "subject"}
    finally:
        ledger.close()


def _replace_kek(keys_dir: Path) -> None:
    path = keys_dir / KEK_FILE
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")


def test_the_right_keys_pass(settings: Settings) -> None:
    _append_both_scopes(settings)
    ledger = Ledger.open(settings)
    try:
        ledger.key_check.run()
        assert ledger.key_check.status() == "ok"
    finally:
        ledger.close()


def test_an_empty_ledger_has_nothing_to_prove(ledger: Ledger) -> None:
    ledger.key_check.run()


def test_a_wrong_kek_is_refused_in_one_line(settings: Settings) -> None:
    _append_both_scopes(settings)
    _replace_kek(settings.keys_dir)
    ledger = Ledger.open(settings)  # loading a valid 32-byte key still works...
    try:
        with pytest.raises(ConfigError) as caught:
            ledger.key_check.run()  # ...but it unwraps nothing
        message = str(caught.value)
        assert "\n" not in message
        assert "kek.key" in message
        assert "unknown key-encryption key" in message
    finally:
        ledger.close()


def test_a_wrong_index_key_is_refused(settings: Settings) -> None:
    """index.key unwraps nothing, but a wrong one would make every search by user or order id
    find nothing: the subject key's scope (its subject's blind index) is recomputed."""
    _append_both_scopes(settings)
    path = settings.keys_dir / INDEX_FILE
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
    ledger = Ledger.open(settings)
    try:
        with pytest.raises(ConfigError, match=r"index\.key does not reproduce"):
            ledger.key_check.run()
    finally:
        ledger.close()


def test_a_missing_subject_key_store_is_refused(settings: Settings) -> None:
    _append_both_scopes(settings)
    shutil.rmtree(settings.keys_dir / "subject-keys")
    ledger = Ledger.open(settings)
    try:
        with pytest.raises(ConfigError, match="subject key store"):
            ledger.key_check.run()
    finally:
        ledger.close()


@pytest.mark.process
def test_serve_refuses_a_wrong_kek(settings: Settings, tmp_path: Path) -> None:
    _append_both_scopes(settings)
    _replace_kek(settings.keys_dir)
    env = {**env_for(settings.database_url, settings.keys_dir)}
    env["AUDIT_LEDGER_LOG_DIR"] = str(tmp_path / "logs")
    result = cli("serve", "--port", str(free_port()), env=env)
    line = assert_one_line_error(result)
    assert "does not unwrap" in line
    assert "kek.key" in line


@pytest.mark.process
def test_serve_refuses_a_world_readable_kek(settings: Settings, tmp_path: Path) -> None:
    (settings.keys_dir / KEK_FILE).chmod(0o644)
    env = {**env_for(settings.database_url, settings.keys_dir)}
    env["AUDIT_LEDGER_LOG_DIR"] = str(tmp_path / "logs")
    result = cli("serve", "--port", str(free_port()), env=env)
    line = assert_one_line_error(result)
    assert f"chmod 600 {settings.keys_dir / KEK_FILE}" in line


def test_readyz_checks_the_keys(settings: Settings) -> None:
    """A process serving with the wrong KEK (here: a ledger opened by hand, so the start-up
    check did not run) is not ready, and says which check failed."""
    _append_both_scopes(settings)
    server = ThreadedServer(settings)
    server.start()
    try:
        ready = httpx.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 200
        assert ready.json()["checks"]["keys"] == "ok"
    finally:
        server.stop()
    _replace_kek(settings.keys_dir)
    server = ThreadedServer(settings)
    server.start()
    try:
        answer = httpx.get(server.url + "/readyz", timeout=30)
        assert answer.status_code == 503
        assert answer.json()["checks"]["keys"] == "the key files do not unwrap the stored data keys"
        assert answer.headers["retry-after"] == "5"
    finally:
        server.stop()
