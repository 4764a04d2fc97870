"""Request bodies as the ledger accepts them: strict JSON (no floats, no duplicate members,
integers within ±2^53) and objects with only the members a use case knows. Every shell (HTTP,
console, CLI) parses bodies here, so the rules are the same whichever way a body arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from audit_ledger.core.canonical import strict_loads
from audit_ledger.errors import FormatError, ValidationError


def parse_json(raw: bytes) -> Any:
    """``raw`` as strict JSON; :class:`ValidationError` (422) when it is not."""
    try:
        return strict_loads(raw)
    except FormatError as exc:
        raise ValidationError(
            "request body is not valid JSON", [{"field": "body", "problem": str(exc)}]
        ) from None


def json_object(body: Any, allowed: Iterable[str], what: str) -> Mapping[str, Any]:
    """``body`` as a JSON object with only ``allowed`` members (422 otherwise)."""
    if not isinstance(body, dict):
        raise ValidationError(
            f"{what} must be a JSON object", [{"field": "body", "problem": "not an object"}]
        )
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValidationError(
            f"{what} has unknown members",
            [{"field": name, "problem": "unknown member"} for name in unknown],
        )
    return body
