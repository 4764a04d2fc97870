"""The client's typed errors, and the mapping of a failed HTTP answer to one of them.

Every error derives from :class:`ClientError` (itself an
:class:`~audit_ledger.errors.AuditLedgerError`). Messages never contain the token or submitted
values: a server's problem details name fields, never echo them, and so do the local checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from audit_ledger.errors import AuditLedgerError

__all__ = [
    "AuthError",
    "ClientError",
    "ConflictError",
    "ForbiddenError",
    "InvalidEventError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServerError",
    "ServerUnavailable",
    "ServerUnavailableError",
    "UnknownEventTypeError",
    "error_from_response",
]

_BATCH_INDEX = re.compile(r"events\[(\d+)\]")


class ClientError(AuditLedgerError):
    """Base of the client's errors.

    ``status`` is the HTTP status (None for errors raised before or without a response),
    ``problem_type`` the problem+json ``type`` and ``detail`` its human detail. Messages never
    contain the token or submitted values.
    """

    def __init__(
        self, message: str, *, status: int | None = None, problem_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem_type = problem_type
        self.detail = message


class AuthError(ClientError):
    """401: the token is missing, unknown, malformed or revoked."""


class ForbiddenError(AuthError):
    """403: the token is valid but its roles do not allow this (e.g. a writer token reading)."""


class InvalidEventError(ClientError):
    """The event (or request) is invalid: a 422 from the server, or refused locally.

    ``errors`` lists ``{"field": ..., "problem": ...}`` items naming the failing fields (batch
    fields are ``events[i]...``, with ``i`` the index in the list given to ``submit_batch``).
    """

    def __init__(
        self,
        message: str,
        errors: Sequence[Mapping[str, str]] = (),
        *,
        status: int | None = None,
        problem_type: str | None = None,
    ) -> None:
        self.errors: list[dict[str, str]] = [dict(e) for e in errors]
        if self.errors:
            named = ", ".join(f"{e.get('field', '?')} ({e.get('problem', '?')})" for e in errors)
            message = f"{message}: {named}"
        super().__init__(message, status=status, problem_type=problem_type)

    @property
    def fields(self) -> list[str]:
        """The names of the failing fields."""
        return [e.get("field", "") for e in self.errors]


class UnknownEventTypeError(InvalidEventError):
    """No category rule matches the event type and no ``category=`` was given."""


class ConflictError(ClientError):
    """409: the ``event_id`` is already in the ledger with different content. Never retried."""


class NotFoundError(ClientError):
    """404: the entry (or checkpoint) does not exist."""


class PayloadTooLargeError(ClientError):
    """413: the body or batch is over the server's limit (lower ``batch_size``)."""


class ServerError(ClientError):
    """An unexpected answer: a 500, or a response that is not the documented shape."""


class ServerUnavailableError(ClientError):
    """The server stayed unreachable or overloaded through every retry.

    Resending the same events later is safe: those that did land are replayed, not duplicated.
    """


#: The name used in the design notes; the class carries the ``Error`` suffix for linters.
ServerUnavailable = ServerUnavailableError


def _shift(text: str, offset: int) -> str:
    """Renumber ``events[i]`` of one chunk to the index in the caller's whole list."""
    if offset == 0:
        return text
    return _BATCH_INDEX.sub(lambda m: f"events[{int(m.group(1)) + offset}]", text)


def error_from_response(response: httpx.Response, offset: int = 0) -> ClientError:
    """The typed error for a non-success response (problem+json per RFC 9457).

    ``offset`` is the index of the chunk's first event in the caller's list, so that the
    ``events[i]`` field names of a batch chunk point into the whole list.
    """
    status = response.status_code
    body: object = None
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    detail = problem.get("detail")
    text = _shift(detail, offset) if isinstance(detail, str) else response.reason_phrase
    ptype = problem.get("type") if isinstance(problem.get("type"), str) else None
    message = f"HTTP {status}: {text}"
    if status == 401:
        return AuthError(message, status=status, problem_type=ptype)
    if status == 403:
        return ForbiddenError(message, status=status, problem_type=ptype)
    if status == 404:
        return NotFoundError(message, status=status, problem_type=ptype)
    if status == 409:
        return ConflictError(message, status=status, problem_type=ptype)
    if status == 413:
        return PayloadTooLargeError(message, status=status, problem_type=ptype)
    if status in {400, 422}:
        raw_errors = problem.get("errors")
        errors = [
            {
                "field": _shift(str(e.get("field", "")), offset),
                "problem": str(e.get("problem", "")),
            }
            for e in (raw_errors if isinstance(raw_errors, list) else [])
            if isinstance(e, Mapping)
        ]
        return InvalidEventError(message, errors, status=status, problem_type=ptype)
    if status >= 500:
        return ServerError(message, status=status, problem_type=ptype)
    return ClientError(message, status=status, problem_type=ptype)
