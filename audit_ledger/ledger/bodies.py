"""Request bodies as the ledger accepts them: strict JSON (no floats, no duplicate members,
integers within ±2^53) and objects with only the members a use case knows. Every shell (HTTP,
console, CLI) parses bodies here, so the rules are the same whichever way a body arrives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from audit_ledger.core.canonical import strict_loads
from audit_ledger.core.text import find_unsafe_text, shown_name, text_problem
from audit_ledger.errors import FormatError, ValidationError

#: JSON escapes that can decode to a NUL or a surrogate: only a body holding one is walked.
_SUSPECT_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")


#: The shells name fields in the same safe form (core.text).
__all__ = [
    "check_json_text",
    "check_text",
    "json_object",
    "parse_json",
    "shown_name",
    "text_problem",
]


def parse_json(raw: bytes) -> Any:
    """``raw`` as strict JSON; :class:`ValidationError` (422) when it is not, or when any
    string in it (member name or value) holds a NUL or a lone surrogate
    (:mod:`audit_ledger.core.text`) — refused here for every body of every shell."""
    try:
        body = strict_loads(raw)
    except FormatError as exc:
        raise ValidationError(
            "request body is not valid JSON", [{"field": "body", "problem": str(exc)}]
        ) from None
    check_json_text(body, raw)
    return body


def check_json_text(body: Any, raw: bytes | str | None = None) -> None:
    """Refuse a NUL or a lone surrogate anywhere in a parsed body (422 naming the field in the
    safe form). With the ``raw`` text, only a body with a suspect escape is walked: raw JSON
    cannot hold either character unescaped (control characters and invalid UTF-8 are already
    refused by the parser)."""
    if raw is not None:
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        if not _SUSPECT_ESCAPE.search(data):
            return
    found = find_unsafe_text(body, "")
    if found is not None:
        field, problem = found
        raise ValidationError(
            "request body holds text that is not accepted",
            [{"field": field or "body", "problem": problem}],
        )


def check_text(value: object, field: str) -> None:
    """Refuse a NUL or a lone surrogate in one text input (a query or path parameter, a CLI
    argument) with a 422 naming ``field`` — never the value."""
    problem = text_problem(value) if isinstance(value, str) else None
    if problem is not None:
        raise ValidationError(f"{field} {problem}", [{"field": field, "problem": problem}])


def json_object(body: Any, allowed: Iterable[str], what: str) -> Mapping[str, Any]:
    """``body`` as a JSON object with only ``allowed`` members (422 otherwise)."""
    if not isinstance(body, dict):
        raise ValidationError(
            f"{what} must be a JSON object", [{"field": "body", "problem": "not an object"}]
        )
    known = set(allowed)
    unknown = [
        shown_name(name, position)
        for position, name in enumerate(body, start=1)
        if name not in known
    ]
    if unknown:
        raise ValidationError(
            f"{what} has unknown members",
            [{"field": name, "problem": "unknown member"} for name in unknown],
        )
    return body
