"""Text the ledger accepts, and how errors name what a client submitted (pure, no I/O).

**Unsafe text.** A NUL character or a lone surrogate (``"\\ud800"``, or an undecodable byte that
Python carries as one) is refused in every text input: PostgreSQL cannot store a NUL in text,
a lone surrogate cannot be encoded as UTF-8 (RFC 3629 §3; RFC 8785 §3.2.2.2 requires valid
Unicode), and neither has a meaning in an audit record. Refusing them where a request enters
(one check per shell) gives a 422 naming the field instead of a driver error deep inside.

**Naming without echoing** (DESIGN §4: errors never echo submitted values). A member or
parameter name chosen by the client is itself submitted text: it may be long, or personal data.
An error shows such a name only when it is a short identifier — ``[A-Za-z_][A-Za-z0-9_]{0,31}``,
the form of every name the API defines — and otherwise names it by its position (``#3``, the
third member of its object, counted from 1). So ``unknown member events[0].colour`` is shown,
while a 10 kB or ``"John Smith"`` member name becomes ``events[0].#2``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Names shown as they are in error messages (imported by :mod:`.canonical`).
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}\Z", re.ASCII)
NUL_PROBLEM = "must not contain a NUL character"
SURROGATE_PROBLEM = "must be valid Unicode (no lone surrogates or undecodable bytes)"


def shown_name(name: object, position: int) -> str:
    """``name`` if it is a short identifier, else ``#<position>`` (1-based)."""
    if isinstance(name, str) and _SAFE_NAME.match(name):
        return name
    return f"#{position}"


def text_problem(text: str) -> str | None:
    """Why ``text`` is refused (a NUL, a lone surrogate), or None if it is acceptable."""
    if "\x00" in text:
        return NUL_PROBLEM
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_PROBLEM
    return None


def find_unsafe_text(value: Any, path: str) -> tuple[str, str] | None:
    """The first string (member name or value) in a parsed JSON ``value`` that
    :func:`text_problem` refuses, as ``(path, problem)`` with the path in the safe form above;
    None if there is none. Iterative: depth is bounded by the JSON parser, not the stack."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return where, problem
        elif isinstance(item, Mapping):
            for position, (name, child) in enumerate(item.items(), start=1):
                member = (
                    f"{where}.{shown_name(name, position)}" if where else shown_name(name, position)
                )
                if isinstance(name, str) and (problem := text_problem(name)) is not None:
                    return member, f"member name {problem}"
                stack.append((child, member))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None
