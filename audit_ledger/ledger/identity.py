"""Who a caller is: principal names, roles and bearer tokens (DESIGN §2, §4). No I/O.

Tokens are 256-bit random strings shown once at creation; only their SHA-256 is stored, so a
database dump reveals no usable token (the token's entropy makes a salt/KDF unnecessary). Every
change to a principal is itself a ``ledger_operations`` entry, committed in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from audit_ledger.errors import ValidationError
from audit_ledger.roles import ROLES

TOKEN_PREFIX = "alt_"  # noqa: S105 - a public prefix that makes leaked tokens greppable
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")
_TOKEN = re.compile(r"alt_[A-Za-z0-9_-]{43}\Z")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    roles: frozenset[str]

    def has_any(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            "principal name must be 1-64 characters: letters, digits, _ . @ -",
            [{"field": "name", "problem": "invalid principal name"}],
        )
    return name


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(sorted(set(roles)))
    if not chosen:
        raise ValidationError(
            "at least one role is required", [{"field": "role", "problem": "required"}]
        )
    unknown = [r for r in chosen if r not in ROLES]
    if unknown:
        raise ValidationError(
            f"unknown role(s): {', '.join(unknown)} (roles: {', '.join(sorted(ROLES))})",
            [{"field": "role", "problem": "unknown role"}],
        )
    return chosen


def token_shape_ok(token: str) -> bool:
    """Cheap syntax check before any database lookup."""
    return bool(_TOKEN.match(token))
