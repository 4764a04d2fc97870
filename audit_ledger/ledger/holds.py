"""Legal holds: while a hold is active, retention and erasure leave what it covers alone.

A hold covers entries by subject (``user_id``, matched through its blind index), by order
(``order_id``), by category, or by an ``occurred_at`` time range. Holds are stored by blind
index, never by raw identifier, and every creation and release is a ``ledger_operations`` entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from audit_ledger.core.header import parse_leaf
from audit_ledger.storage.entries import StoredEntry
from audit_ledger.storage.holds import StoredHold

SCOPES = ("subject", "order", "category", "time_range")
#: Header ref name matched by each identifier scope.
REF_OF_SCOPE = {"subject": "user", "order": "order"}


def new_hold_id() -> str:
    return "hold_" + uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class HoldMatcher:
    """Tests entries against the active holds (built once per run)."""

    holds: Sequence[StoredHold]

    def holding(self, entry: StoredEntry) -> list[str]:
        """Ids of the holds that cover ``entry``."""
        if not self.holds:
            return []
        refs = parse_leaf(entry.leaf).refs
        out = []
        for hold in self.holds:
            if hold.scope in REF_OF_SCOPE:
                covered = refs.get(REF_OF_SCOPE[hold.scope]) == hold.scope_value
            elif hold.scope == "category":
                covered = entry.category == hold.scope_value
            else:
                covered = (hold.since is None or entry.occurred_at >= hold.since) and (
                    hold.until is None or entry.occurred_at < hold.until
                )
            if covered:
                out.append(hold.hold_id)
        return out

    def is_held(self, entry: StoredEntry) -> bool:
        return bool(self.holding(entry))
