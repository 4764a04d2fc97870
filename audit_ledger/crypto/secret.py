"""A bytes holder that never shows its content in ``repr``/``str`` (logs, tracebacks)."""

from __future__ import annotations

import hmac


class Secret:
    """Wraps secret bytes; ``repr`` shows only the length."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The secret bytes. Call only where they are used, never to log or print."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Secret(<{len(self._value)} bytes hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return id(self)

    def __reduce__(self) -> str:  # pragma: no cover - refuses pickling
        raise TypeError("secrets cannot be pickled")
