"""The legal holds that cover one data subject, for the console's subject report (issue #14).

The report's entries come from the read use case (``Reads.query`` with a ``user_id``, recorded
as any read); this adds the active holds that keep them: a ``subject`` hold on the user's blind
index, and any ``order``, ``category`` or ``time_range`` hold covering one of the entries shown
(the same rules as :class:`~audit_ledger.ledger.holds.HoldMatcher`, applied to the headers the
caller was shown), and the subject's erasure requests not done yet (pending, or blocked by a
hold). The user id itself is only turned into its blind index, never stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from audit_ledger.ledger.erasure import DONE, Erasure
from audit_ledger.ledger.holds import REF_OF_SCOPE, Holds
from audit_ledger.ledger.reads import EntryView
from audit_ledger.storage.erasure_requests import StoredErasureRequest
from audit_ledger.storage.holds import StoredHold


def _covers(hold: StoredHold, user_ref: str, view: EntryView | None) -> bool:
    if hold.scope == "subject":
        return hold.scope_value == user_ref
    if view is None:
        return False
    header = view.header
    if hold.scope in REF_OF_SCOPE:
        return (header.get("refs") or {}).get(REF_OF_SCOPE[hold.scope]) == hold.scope_value
    if hold.scope == "category":
        return bool(header.get("category") == hold.scope_value)
    occurred = str(header.get("occurred_at", ""))
    return (hold.since is None or occurred >= hold.since) and (
        hold.until is None or occurred < hold.until
    )


def subject_holds(holds: Holds, user_id: str | int, views: Sequence[EntryView]) -> list[StoredHold]:
    """The active holds covering the subject ``user_id`` or one of ``views``, by hold id."""
    user_ref = holds.indexer.index("user", user_id)
    out = []
    for hold in holds.all():
        if hold.released_seq is not None:
            continue
        if _covers(hold, user_ref, None) or any(_covers(hold, user_ref, v) for v in views):
            out.append(hold)
    return sorted(out, key=lambda h: h.hold_id)


def subject_erasures(erasure: Erasure, user_id: str | int) -> list[StoredErasureRequest]:
    """The subject's erasure requests still open (pending or blocked), newest first."""
    return [r for r in erasure.requests(user_id=user_id) if r.state != DONE]
