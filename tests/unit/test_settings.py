"""Settings: defaults, environment overrides, one-line errors that never echo secrets."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pydantic
import pytest

from audit_ledger.errors import ConfigError
from audit_ledger.settings import ENV_PREFIX, Settings, load_settings, redact_url

PASSWORD = "hunter2-S3cret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment with no AUDIT_LEDGER_* variables."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def config_error(**overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert "\n" not in message, "ConfigError must be one line"
    return info.value


def assert_no_leak(exc: BaseException, secret: str) -> None:
    assert secret not in str(exc)
    assert secret not in repr(exc)
    # The pydantic error (whose text quotes inputs) must not ride along as the cause/context.
    assert exc.__cause__ is None
    assert exc.__suppress_context__
    assert secret not in "".join(traceback.format_exception(exc))


# --- defaults and overrides ---------------------------------------------------------------


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url == "sqlite:///./audit-ledger.sqlite3"
    assert s.keys_dir == Path("keys")
    assert s.checkpoint_origin == "quickcart.local/audit-ledger"
    assert s.policy_file is None
    assert s.log_dir == Path("logs")
    assert s.max_batch_events == 1000
    assert s.max_body_bytes == 4 * 1024 * 1024
    assert s.max_event_bytes == 64 * 1024
    assert s.page_limit_default == 100
    assert s.page_limit_max == 1000
    assert s.db_pool_size == 10


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDIT_LEDGER_DATABASE_URL", "postgresql+psycopg://app@db.internal/audit")
    monkeypatch.setenv("AUDIT_LEDGER_KEYS_DIR", str(tmp_path / "k"))
    monkeypatch.setenv("AUDIT_LEDGER_CHECKPOINT_ORIGIN", "example.com/log")
    monkeypatch.setenv("AUDIT_LEDGER_POLICY_FILE", str(tmp_path / "policy.toml"))
    monkeypatch.setenv("AUDIT_LEDGER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("AUDIT_LEDGER_MAX_BATCH_EVENTS", "50")
    monkeypatch.setenv("AUDIT_LEDGER_PAGE_LIMIT_DEFAULT", "20")
    monkeypatch.setenv("AUDIT_LEDGER_PAGE_LIMIT_MAX", "200")
    monkeypatch.setenv("AUDIT_LEDGER_DB_POOL_SIZE", "3")
    s = load_settings()
    assert s.database_url == "postgresql+psycopg://app@db.internal/audit"
    assert s.keys_dir == tmp_path / "k"
    assert s.checkpoint_origin == "example.com/log"
    assert s.policy_file == tmp_path / "policy.toml"
    assert s.log_dir == tmp_path / "logs"
    assert (s.max_batch_events, s.page_limit_default, s.page_limit_max) == (50, 20, 200)
    assert s.db_pool_size == 3


def test_keyword_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_LEDGER_MAX_BATCH_EVENTS", "50")
    assert load_settings(max_batch_events=7).max_batch_events == 7


def test_empty_policy_file_variable_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_LEDGER_POLICY_FILE", "")
    assert load_settings().policy_file is None


def test_unknown_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. AUDIT_LEDGER_REQUIRE_POSTGRES is read by the test suite, not by Settings.
    monkeypatch.setenv("AUDIT_LEDGER_REQUIRE_POSTGRES", "1")
    load_settings()


def test_unknown_keyword_is_an_error() -> None:
    exc = config_error(max_batch_event=5)
    assert "unknown setting 'max_batch_event'" in str(exc)


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.max_batch_events = 5  # type: ignore[misc]


# --- checkpoint origin (DESIGN §4: no spaces, no '+') -------------------------------------


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("", "must not be empty"),
        ("quickcart local", "must not contain spaces or '+'"),
        ("quickcart+log", "must not contain spaces or '+'"),
        ("quick\tcart", "must not contain spaces or '+'"),
        ("quick\ncart", "must not contain spaces or '+'"),
        ("quick\u2003cart", "must not contain spaces or '+'"),  # EM SPACE
        ("quick\x00cart", "must not contain control characters"),
        ("quick\x7fcart", "must not contain control characters"),
        ("quick\u200bcart", "must not contain control characters"),  # zero-width space (Cf)
    ],
)
def test_bad_origin_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, origin: str, problem: str
) -> None:
    if "\x00" in origin:
        exc = config_error(checkpoint_origin=origin)  # NUL cannot go through the environment
    else:
        monkeypatch.setenv("AUDIT_LEDGER_CHECKPOINT_ORIGIN", origin)
        exc = config_error()
    assert str(exc) == f"invalid settings: AUDIT_LEDGER_CHECKPOINT_ORIGIN: {problem}"


@pytest.mark.parametrize("origin", ["example.com/log", "quickcart.local/audit-ledger", "a"])
def test_good_origins(origin: str) -> None:
    assert load_settings(checkpoint_origin=origin).checkpoint_origin == origin


# --- numeric limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUDIT_LEDGER_MAX_BATCH_EVENTS", "0"),
        ("AUDIT_LEDGER_MAX_BATCH_EVENTS", "10001"),
        ("AUDIT_LEDGER_MAX_BATCH_EVENTS", "many"),
        ("AUDIT_LEDGER_PAGE_LIMIT_MAX", "1001"),
        ("AUDIT_LEDGER_PAGE_LIMIT_DEFAULT", "0"),
        ("AUDIT_LEDGER_DB_POOL_SIZE", "0"),
        ("AUDIT_LEDGER_MAX_EVENT_BYTES", "-1"),
    ],
)
def test_out_of_range_numbers_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    exc = config_error()
    assert str(exc).startswith(f"invalid settings: {variable}: ")
    assert value not in str(exc).removeprefix(f"invalid settings: {variable}")


@pytest.mark.parametrize("limit", [1, 10_000])
def test_batch_limit_bounds_are_inclusive(limit: int) -> None:
    assert load_settings(max_batch_events=limit).max_batch_events == limit


def test_page_default_may_not_exceed_page_max() -> None:
    exc = config_error(page_limit_default=500, page_limit_max=200)
    assert "AUDIT_LEDGER_PAGE_LIMIT_DEFAULT must not exceed AUDIT_LEDGER_PAGE_LIMIT_MAX" in str(exc)


def test_event_size_may_not_exceed_body_size() -> None:
    exc = config_error(max_event_bytes=8192, max_body_bytes=4096)
    assert "AUDIT_LEDGER_MAX_EVENT_BYTES must not exceed AUDIT_LEDGER_MAX_BODY_BYTES" in str(exc)


def test_several_problems_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_LEDGER_CHECKPOINT_ORIGIN", "a+b")
    monkeypatch.setenv("AUDIT_LEDGER_DB_POOL_SIZE", "0")
    message = str(config_error())
    assert "AUDIT_LEDGER_CHECKPOINT_ORIGIN" in message
    assert "AUDIT_LEDGER_DB_POOL_SIZE" in message


# --- database URL: the password never leaves ----------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"mysql://app:{PASSWORD}@db/audit", "unsupported database backend 'mysql'"),
        (f"app:{PASSWORD}@db/audit", "not a SQLAlchemy database URL"),
        (f"postgresql://app:{PASSWORD}@db:port/audit", "not a SQLAlchemy database URL"),
        # An unescaped '@' in the password would put its tail into the host.
        (f"postgresql://app:x@{PASSWORD}@db/audit", "ambiguous '@'"),
    ],
)
def test_bad_database_url_never_echoes_password(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("AUDIT_LEDGER_DATABASE_URL", url)
    exc = config_error()
    assert str(exc).startswith("invalid settings: AUDIT_LEDGER_DATABASE_URL: ")
    assert problem in str(exc)
    assert_no_leak(exc, PASSWORD)


def test_raw_settings_errors_hide_input_too() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Settings(database_url=f"mysql://app:{PASSWORD}@db/audit")
    assert PASSWORD not in str(info.value)


def test_password_not_in_repr() -> None:
    s = load_settings(database_url=f"postgresql+psycopg://app:{PASSWORD}@db/audit")
    assert PASSWORD not in repr(s)
    assert PASSWORD not in str(s)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"postgresql+psycopg://app:{PASSWORD}@db:5432/audit",
            "postgresql+psycopg://app:***@db:5432/audit",
        ),
        (
            f"postgresql+psycopg://app@db/audit?password={PASSWORD}&sslmode=require",
            "postgresql+psycopg://app@db/audit?password=redacted&sslmode=require",
        ),
        ("postgresql+psycopg://app@db/audit", "postgresql+psycopg://app@db/audit"),
        ("sqlite:///./audit-ledger.sqlite3", "sqlite:///./audit-ledger.sqlite3"),
        (f"postgresql://app:x@{PASSWORD}@db/audit", "<unparseable url>"),
        (f"app:{PASSWORD}", "<unparseable url>"),
        (f"postgresql://app:{PASSWORD}@db:port/audit", "<unparseable url>"),
        ("", "<unparseable url>"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert PASSWORD not in redact_url(url)


@pytest.mark.parametrize("char", ["/", "?", "#", ":", "%40"])
def test_redact_url_with_awkward_password(char: str) -> None:
    url = f"postgresql://app:pa{char}ss-{PASSWORD}@db/audit"
    assert redact_url(url) == "postgresql://app:***@db/audit"


def test_tiles_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load_settings()
    assert s.tiles_public is False
    assert s.tiles_dir is None
    monkeypatch.setenv("AUDIT_LEDGER_TILES_PUBLIC", "true")
    monkeypatch.setenv("AUDIT_LEDGER_TILES_DIR", str(tmp_path / "site"))
    s = load_settings()
    assert s.tiles_public is True
    assert s.tiles_dir == tmp_path / "site"
    monkeypatch.setenv("AUDIT_LEDGER_TILES_DIR", "")
    assert load_settings().tiles_dir is None
    monkeypatch.setenv("AUDIT_LEDGER_TILES_PUBLIC", "maybe")
    with pytest.raises(ConfigError, match="AUDIT_LEDGER_TILES_PUBLIC"):
        load_settings()
