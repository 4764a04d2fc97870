"""Service settings, read from ``AUDIT_LEDGER_*`` environment variables.

Call :func:`load_settings` rather than constructing :class:`Settings` directly: it turns pydantic's
multi-line ``ValidationError`` into one :class:`~audit_ledger.errors.ConfigError` line that names
the environment variable and the problem, and never the submitted value (``database_url`` may
carry a password). Use :func:`redact_url` whenever a database URL is logged or displayed.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Final

import pydantic
from pydantic import Field, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from audit_ledger.core.cosignature import CosignerKey, parse_cosigner_key
from audit_ledger.errors import CheckpointError, ConfigError
from audit_ledger.observability.syslog_config import parse_syslog_url, parse_tiers

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "redact_url"]

ENV_PREFIX: Final = "AUDIT_LEDGER_"

KIB: Final = 1024
MIB: Final = 1024 * KIB

#: DESIGN §4 (normative): ``limit`` is 1…1000 and leaves come at most 1000 per page.
PAGE_LIMIT_CEILING: Final = 1000

_SUPPORTED_BACKENDS: Final = frozenset({"postgresql", "sqlite"})
_UNPARSEABLE: Final = "<unparseable url>"
# Query parameters that libpq/psycopg accept and that hold secrets (e.g. ``?password=``).
_SECRET_QUERY_HINTS: Final = ("password", "secret", "token")


def _parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL, rejecting the ambiguous shapes that would leak a password.

    An unescaped ``@`` inside a password makes SQLAlchemy read the password's tail as part of
    the host (``u:pa@ss@h`` → password ``pa``, host ``ss@h``), so a redacted rendering would
    still show ``ss``. Such URLs are refused instead of half-redacted.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        # ``from None``: SQLAlchemy's own message may quote the URL.
        raise ValueError("not a SQLAlchemy database URL") from None
    if parsed.host is not None and "@" in parsed.host:
        raise ValueError("ambiguous '@' in the URL (percent-encode it in the password as %40)")
    return parsed


def redact_url(url: str) -> str:
    """Return ``url`` with its password shown as ``***`` and secret query values as ``redacted``.

    Anything that cannot be parsed unambiguously becomes ``"<unparseable url>"`` so that a
    malformed URL is never echoed (its password could sit anywhere in it).
    """
    try:
        parsed = _parse_url(url)
    except ValueError:
        return _UNPARSEABLE
    secret_keys = {
        key for key in parsed.query if any(hint in key.lower() for hint in _SECRET_QUERY_HINTS)
    }
    if secret_keys:
        parsed = parsed.update_query_dict(dict.fromkeys(secret_keys, "redacted"))
    return parsed.render_as_string(hide_password=True)


class Settings(BaseSettings):
    """Configuration of one audit-ledger process.

    Every field is read from ``AUDIT_LEDGER_<FIELD NAME>`` (case-insensitive); keyword arguments
    override the environment. Unknown keyword arguments are errors; unknown ``AUDIT_LEDGER_*``
    environment variables are ignored (pydantic-settings only reads declared fields).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        # Defence in depth: even a raw pydantic error must not echo a submitted value.
        hide_input_in_errors=True,
        validate_default=True,
    )

    #: SQLAlchemy URL. May contain a password: hidden from ``repr`` and never echoed in errors.
    database_url: str = Field(default="sqlite:///./audit-ledger.sqlite3", repr=False)
    #: Directory holding the key-encryption key, index key and checkpoint signing key.
    keys_dir: Path = Path("keys")
    #: Checkpoint origin line and signed-note key name (DESIGN §3, §4).
    checkpoint_origin: str = "quickcart.local/audit-ledger"
    #: Policy file merged over the built-in category policy (see ``audit_ledger.policy``).
    policy_file: Path | None = None
    #: Directory of the tiered operational log files.
    log_dir: Path = Path("logs")
    #: Most events accepted in one ``POST /v1/events/batch``.
    max_batch_events: int = Field(default=1000, ge=1, le=10_000)
    #: Largest accepted HTTP request body, in bytes.
    max_body_bytes: int = Field(default=4 * MIB, ge=1 * KIB)
    #: Largest canonical JSON encoding of one event's ``data``, in bytes.
    max_event_bytes: int = Field(default=64 * KIB, ge=1)
    #: Page size when a read request gives no ``limit``.
    page_limit_default: int = Field(default=100, ge=1, le=PAGE_LIMIT_CEILING)
    #: Largest ``limit`` a read request may ask for.
    page_limit_max: int = Field(default=PAGE_LIMIT_CEILING, ge=1, le=PAGE_LIMIT_CEILING)
    #: Run the scheduled jobs inside ``audit-ledger serve`` (off: run ``audit-ledger scheduler``).
    scheduler_enabled: bool = True
    #: Job periods. Checkpoints are made only when the log grew; no setting can purge early.
    checkpoint_interval_seconds: int = Field(default=60, ge=1)
    retention_interval_seconds: int = Field(default=86_400, ge=60)
    verify_interval_seconds: int = Field(default=3_600, ge=60)
    #: Incremental verification (new entries since the last verified checkpoint): tamper alert.
    verify_recent_interval_seconds: int = Field(default=60, ge=1)
    #: Erasure requests left pending (a crash) or blocked by a hold released meanwhile: rerun.
    erasure_retry_interval_seconds: int = Field(default=300, ge=1)
    #: SQLAlchemy connection pool size (ignored for SQLite).
    db_pool_size: int = Field(default=10, ge=1, le=200)
    #: Witnesses each new checkpoint is submitted to (C2SP tlog-witness v1): comma-separated
    #: ``<submission prefix URL> <witness verifier key>`` pairs (see :func:`parse_witnesses`).
    witnesses: str = ""
    #: Per-request timeout towards a witness; a slow witness never holds up appends.
    witness_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    #: How often the witnessing job submits the latest checkpoint to lagging witnesses.
    witness_interval_seconds: int = Field(default=60, ge=1)
    #: HTTP limits enforced by ``serve`` before a request reaches the app (api/protocol.py):
    #: request line + header fields (→ 431), time to receive a head and a body (→ 408), and
    #: connections per worker (lowered to fit the descriptor limit).
    http_max_head_bytes: int = Field(default=16 * KIB, ge=1 * KIB, le=1 * MIB)
    http_max_headers: int = Field(default=100, ge=10, le=10_000)
    http_head_timeout_seconds: float = Field(default=10.0, gt=0, le=3_600)
    http_body_idle_timeout_seconds: float = Field(default=10.0, gt=0, le=3_600)
    http_body_timeout_seconds: float = Field(default=60.0, gt=0, le=86_400)
    http_max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    #: Serve ``/tlog/`` (checkpoint, tiles, entry bundles) without authentication (DESIGN §7).
    tiles_public: bool = False
    #: When set, the checkpoint job publishes the tiles into this directory (``tiles publish``).
    tiles_dir: Path | None = None
    #: A PostgreSQL hot standby of ``database_url`` (issue #16): reads, leaves, proofs, tiles
    #: and exports run there once it has replayed what they need (ledger/replica.py); writes,
    #: checkpoints and the scheduler stay on the primary. Unset: everything on the primary.
    read_database_url: str | None = Field(default=None, repr=False)

    #: Deployment name written on every log line (``environment``), forwarded ones too.
    environment: str = Field(default="local", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    #: Operational log files rotate at this size as well as daily (the QuickCart plan: 100 MB)…
    log_max_bytes: int = Field(default=100 * MIB, ge=1 * KIB)
    #: …keeping this many rotated application/performance files (security and error go by age).
    log_backup_count: int = Field(default=10, ge=1)
    #: SIEM forwarding: ``tcp://host:port`` or ``tls://host:port`` (RFC 5424 over RFC 6587 /
    #: RFC 5425); empty means no forwarding.
    syslog_url: str = ""
    #: CA bundle the TLS receiver's certificate is checked against (default: the system's).
    syslog_ca_file: Path | None = None
    #: Forwarded tiers: security, error, scheduler (job outcomes), application, performance.
    syslog_tiers: str = "security,error,scheduler"
    #: Lines held for the receiver; beyond it lines are dropped (counted), appends never wait.
    syslog_queue_size: int = Field(default=10_000, ge=1, le=10_000_000)

    def logging_options(self) -> dict[str, Any]:
        """``configure_logging`` keyword arguments from these settings."""
        return {
            "environment": self.environment,
            "max_bytes": self.log_max_bytes,
            "backup_count": self.log_backup_count,
            "syslog_url": self.syslog_url,
            "syslog_tiers": self.syslog_tiers,
            "syslog_ca_file": self.syslog_ca_file,
            "syslog_queue_size": self.syslog_queue_size,
        }

    @field_validator("syslog_url")
    @classmethod
    def _check_syslog_url(cls, value: str) -> str:
        if value.strip():
            parse_syslog_url(value)
        return value.strip()

    @field_validator("syslog_tiers")
    @classmethod
    def _check_syslog_tiers(cls, value: str) -> str:
        parse_tiers(value)
        return value

    @field_validator("syslog_ca_file", mode="before")
    @classmethod
    def _empty_ca_file_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        parsed = _parse_url(value)
        backend = parsed.get_backend_name()
        if backend not in _SUPPORTED_BACKENDS:
            # The backend name is not secret; the rest of the URL may be.
            raise ValueError(f"unsupported database backend {backend!r} (use postgresql or sqlite)")
        return value

    @field_validator("checkpoint_origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        # C2SP signed-note key names (golang.org/x/mod/sumdb/note): non-empty, no Unicode
        # spaces, no '+'. Control characters would break the checkpoint's line framing.
        if not value:
            raise ValueError("must not be empty")
        if any(ch.isspace() or ch == "+" for ch in value):
            raise ValueError("must not contain spaces or '+'")
        if any(unicodedata.category(ch).startswith("C") for ch in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("witnesses")
    @classmethod
    def _check_witnesses(cls, value: str) -> str:
        parse_witnesses(value)
        return value

    @field_validator("policy_file", "tiles_dir", mode="before")
    @classmethod
    def _empty_policy_file_is_none(cls, value: object) -> object:
        # ``AUDIT_LEDGER_POLICY_FILE=`` means "no file", not the current directory (same for
        # ``AUDIT_LEDGER_TILES_DIR=``).
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("read_database_url", mode="before")
    @classmethod
    def _check_read_database_url(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None  # ``AUDIT_LEDGER_READ_DATABASE_URL=`` means "no replica"
        if isinstance(value, str) and _parse_url(value).get_backend_name() != "postgresql":
            raise ValueError("a read replica must be a PostgreSQL hot standby (postgresql://…)")
        return value

    @model_validator(mode="after")
    def _check_read_replica(self) -> Settings:
        if self.read_database_url is not None and (
            _parse_url(self.database_url).get_backend_name() != "postgresql"
        ):
            raise ValueError(
                f"{_env('read_database_url')} needs a PostgreSQL {_env('database_url')}"
                " (an embedded SQLite file has no replicas)"
            )
        return self

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.page_limit_default > self.page_limit_max:
            raise ValueError(
                f"{_env('page_limit_default')} must not exceed {_env('page_limit_max')}"
            )
        if self.max_event_bytes > self.max_body_bytes:
            raise ValueError(f"{_env('max_event_bytes')} must not exceed {_env('max_body_bytes')}")
        return self


def parse_witnesses(text: str) -> list[tuple[str, CosignerKey]]:
    """``AUDIT_LEDGER_WITNESSES``: ``URL VKEY[, URL VKEY]…`` → ``[(submission prefix, key)]``.

    The URL is the witness's submission prefix (``add-checkpoint`` is appended); the key is its
    cosigner verifier key ``name+hash+base64(0x04 || key)``. Raises ValueError naming the
    entry's position, never its text.
    """
    found: list[tuple[str, CosignerKey]] = []
    for number, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split()
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise ValueError(f"entry {number} must be '<http(s) URL> <witness verifier key>'")
        try:
            key = parse_cosigner_key(parts[1])
        except CheckpointError as exc:
            raise ValueError(f"entry {number}: {exc}") from None
        if any(k == key for _, k in found):
            raise ValueError(f"entry {number} repeats a witness key")
        found.append((parts[0].rstrip("/"), key))
    return found


def _env(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _describe(error: ErrorDetails) -> str:
    """One ``VARIABLE: problem`` fragment for a pydantic error, without the input value."""
    loc = error["loc"]
    msg = error["msg"]
    # Custom validators' messages arrive as "Value error, <ours>".
    msg = msg.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and loc:
        return f"unknown setting {str(loc[0])!r}"
    if loc and isinstance(loc[0], str) and loc[0] in Settings.model_fields:
        return f"{_env(loc[0])}: {msg}"
    return msg


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with ``overrides`` taking precedence.

    Raises:
        ConfigError: one line naming each offending ``AUDIT_LEDGER_*`` variable and its problem;
            submitted values are never included.
    """
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        detail = "; ".join(
            _describe(err) for err in exc.errors(include_url=False, include_input=False)
        )
        # ``from None``: the pydantic error's own text may quote the value (a password).
        raise ConfigError(f"invalid settings: {detail}") from None
