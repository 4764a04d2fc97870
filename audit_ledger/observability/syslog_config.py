"""What the settings need of syslog forwarding: the target URL's and the tiers' syntax.

Apart from :mod:`.syslog` (the forwarder, its socket, TLS and metrics), which only the
processes that forward load: every command reads the settings, and ``audit-ledger verify`` is
a whole process users time (issue #16).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

#: The security tier (with the ledger's own operations: reads, retention runs, erasures, holds,
#: key events, principal changes), the error tier and the scheduled jobs' outcomes
#: (verification results, checkpoints, witness submissions).
DEFAULT_TIERS = "security,error,scheduler"
#: Forwardable tiers and the logger each one names (``error`` is every record from ERROR up).
TIER_LOGGERS = {
    "application": "audit_ledger.application",
    "security": "audit_ledger.security",
    "operations": "audit_ledger.security.operations",
    "performance": "audit_ledger.performance",
    "scheduler": "audit_ledger.application.scheduler",
    "error": "",
}


@dataclass(frozen=True, slots=True)
class SyslogTarget:
    host: str
    port: int
    tls: bool


def parse_syslog_url(url: str) -> SyslogTarget:
    """``tcp://host:port`` or ``tls://host:port`` → target. ValueError names the problem, not
    the text (a URL could carry credentials by mistake)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("not a URL (use tcp://host:port or tls://host:port)") from None
    if parts.scheme not in ("tcp", "tls"):
        raise ValueError("scheme must be tcp or tls")
    if not parts.hostname or port is None or port == 0:
        raise ValueError("must give a host and a port (tcp://host:port or tls://host:port)")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise ValueError("must be only scheme://host:port")
    return SyslogTarget(parts.hostname, port, parts.scheme == "tls")


def parse_tiers(text: str) -> frozenset[str]:
    """``AUDIT_LEDGER_SYSLOG_TIERS``: comma-separated names from :data:`TIER_LOGGERS`."""
    tiers = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(tiers - TIER_LOGGERS.keys())
    if unknown:
        raise ValueError(f"unknown tier(s) {', '.join(unknown)} (use {', '.join(TIER_LOGGERS)})")
    return tiers
