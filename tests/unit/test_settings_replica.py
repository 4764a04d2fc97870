"""``AUDIT_LEDGER_READ_DATABASE_URL`` (issue #16): optional, PostgreSQL only, and only beside a
PostgreSQL primary; refused in one line that never echoes the URL (it may hold a password)."""

from __future__ import annotations

import os

import pytest

from audit_ledger.errors import ConfigError
from audit_ledger.settings import ENV_PREFIX, load_settings

PASSWORD = "s3cr3t-replica-pw"
PRIMARY = "postgresql://app@db/audit"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def refused(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert "\n" not in message
    assert PASSWORD not in message
    assert info.value.__cause__ is None
    return message


def test_unset_or_empty_means_no_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(database_url=PRIMARY).read_database_url is None
    monkeypatch.setenv("AUDIT_LEDGER_READ_DATABASE_URL", "")
    assert load_settings(database_url=PRIMARY).read_database_url is None


def test_a_postgresql_standby_beside_a_postgresql_primary(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://reader:{PASSWORD}@standby:5433/audit"
    monkeypatch.setenv("AUDIT_LEDGER_READ_DATABASE_URL", url)
    settings = load_settings(database_url=PRIMARY)
    assert settings.read_database_url == url
    assert PASSWORD not in repr(settings)


def test_refused_beside_a_sqlite_primary() -> None:
    message = refused(
        database_url="sqlite:///ledger.sqlite3",
        read_database_url=f"postgresql://reader:{PASSWORD}@standby/audit",
    )
    assert "AUDIT_LEDGER_READ_DATABASE_URL needs a PostgreSQL AUDIT_LEDGER_DATABASE_URL" in message


@pytest.mark.parametrize(
    "url", [f"sqlite:///{PASSWORD}.sqlite3", f"mysql://reader:{PASSWORD}@standby/audit"]
)
def test_refused_unless_postgresql(url: str) -> None:
    message = refused(database_url=PRIMARY, read_database_url=url)
    assert message.startswith("invalid settings: AUDIT_LEDGER_READ_DATABASE_URL: ")
    assert "PostgreSQL hot standby" in message
