"""The fixed set of principal roles (DESIGN §2).

A principal may hold several roles. Roles are a closed set on purpose: a policy file naming an
unknown role is a configuration error, not a silently powerless reader.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ADMIN",
    "AUDITOR",
    "COMPLIANCE_OFFICER",
    "PLAINTEXT_READER_ROLES",
    "PRIVACY_OFFICER",
    "ROLES",
    "SECURITY_TEAM",
    "WRITER",
    "Role",
]


class Role(StrEnum):
    """A principal's role. Members are ``str``, so they compare equal to their names."""

    #: The bot: append only, never reads.
    WRITER = "writer"
    #: Reads ``financial_transactions`` in plaintext.
    COMPLIANCE_OFFICER = "compliance_officer"
    #: Reads ``data_privacy_events`` in plaintext.
    PRIVACY_OFFICER = "privacy_officer"
    #: Reads ``security_events`` and ``ledger_operations`` in plaintext.
    SECURITY_TEAM = "security_team"
    #: Headers, proofs, checkpoints, verification and export of every category; never plaintext.
    AUDITOR = "auditor"
    #: Principals, legal holds and keys.
    ADMIN = "admin"


WRITER: Final = Role.WRITER
COMPLIANCE_OFFICER: Final = Role.COMPLIANCE_OFFICER
PRIVACY_OFFICER: Final = Role.PRIVACY_OFFICER
SECURITY_TEAM: Final = Role.SECURITY_TEAM
AUDITOR: Final = Role.AUDITOR
ADMIN: Final = Role.ADMIN

#: Every role name.
ROLES: Final[frozenset[str]] = frozenset(role.value for role in Role)

#: The only roles a category policy may name as plaintext readers. The writer appends only, the
#: auditor works on headers and proofs without personal data, and the admin manages principals and
#: keys; none of them may be granted plaintext by a policy file.
PLAINTEXT_READER_ROLES: Final[frozenset[str]] = frozenset(
    {Role.COMPLIANCE_OFFICER.value, Role.PRIVACY_OFFICER.value, Role.SECURITY_TEAM.value}
)
