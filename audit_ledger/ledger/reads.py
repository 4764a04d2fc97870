"""Reading entries back: who may see which category, payload states, decryption, pagination.

Who sees what (DESIGN §4): a category's readers get plaintext; the auditor gets headers of every
category (``payload_state`` says ``withheld`` where a payload exists); any other role asking for
a category it may not read is refused; without a category filter a caller gets what it may see.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from audit_ledger.core.canonical import MAX_SAFE_INTEGER, strict_loads
from audit_ledger.core.header import parse_leaf
from audit_ledger.crypto.envelope import payload_aad
from audit_ledger.errors import (
    CryptoError,
    ExternalKeyMissingError,
    FormatError,
    PermissionDeniedError,
    ValidationError,
)
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.policy import Policy
from audit_ledger.storage.entries import StoredEntry
from audit_ledger.storage.keys import StoredKey
from audit_ledger.storage.store import Store

PRESENT, WITHHELD, PURGED, ERASED = "present", "withheld", "purged", "erased"
_PURGE_STATE = {"retention": PURGED, "erasure": ERASED}


@dataclass(frozen=True, slots=True)
class EntryView:
    """One entry as a caller may see it."""

    seq: int
    leaf_hash: str
    header: dict[str, Any]
    payload_state: str
    data: dict[str, Any] | None = None
    #: seq of the ledger_operations entry that purged or erased the payload
    state_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "leaf_hash": self.leaf_hash,
            "header": self.header,
            "payload_state": self.payload_state,
        }
        if self.state_seq is not None:
            out["payload_state_seq"] = self.state_seq
        if self.data is not None:
            out["data"] = self.data
        return out


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, seq = text.split(":")
        # A seq is a header integer (< 2^53); a larger one would overflow the database's
        # BIGINT (or SQLite's INTEGER) parameter and surface as a 500, not as a bad cursor.
        if version != "v1" or not seq.isdigit() or int(seq) > MAX_SAFE_INTEGER:
            raise ValueError(cursor)  # noqa: TRY301 - folded into the one error below
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(
            "cursor is not a next_cursor from this API",
            [{"field": "cursor", "problem": "invalid cursor"}],
        ) from None


def categories_for(policy: Policy, roles: Iterable[str], requested: str | None) -> frozenset[str]:
    """The categories a caller may list, narrowed to ``requested`` if given."""
    roles = frozenset(roles)
    visible = policy.visible_categories(roles)
    if requested is not None:
        if requested not in policy.categories:
            raise ValidationError(
                "unknown category", [{"field": "category", "problem": "unknown category"}]
            )
        if requested not in visible:
            raise PermissionDeniedError("your roles may not read this category")
        return frozenset({requested})
    if not visible:
        raise PermissionDeniedError("your roles may not read any category")
    return frozenset(visible)


class EntryReader:
    """Turns stored entries into views for a set of roles, decrypting where allowed."""

    def __init__(self, store: Store, policy: Policy, keyring: DataKeyRing) -> None:
        self.store = store
        self.policy = policy
        self.keyring = keyring

    def views(self, stored: Sequence[StoredEntry], roles: Iterable[str]) -> list[EntryView]:
        roles = frozenset(roles)
        readable = self.policy.readable_categories(roles)
        headers = {e.seq: parse_leaf(e.leaf) for e in stored}
        wanted = {
            h.key_id
            for e in stored
            if (h := headers[e.seq]).key_id and e.payload is not None and h.category in readable
        }
        keys = self.store.keys_by_id(sorted(k for k in wanted if k))
        out = []
        for entry in stored:
            header = headers[entry.seq]
            state, data, state_seq = PRESENT, None, None
            if entry.payload is None:
                if entry.purge_reason is not None:
                    state, state_seq = (
                        _PURGE_STATE.get(entry.purge_reason, PURGED),
                        entry.purge_op_seq,
                    )
                elif header.payload_sha256 is None:
                    state = PRESENT  # the entry commits to no payload
            elif header.category not in readable:
                state = WITHHELD
            else:
                stored_key = keys.get(header.key_id or "")
                if stored_key is None or stored_key.wrapped is None:
                    state = ERASED
                    state_seq = stored_key.destroyed_by_seq if stored_key else None
                else:
                    try:
                        data = self._open(entry, entry.payload, header.category, stored_key)
                    except ExternalKeyMissingError:
                        state = ERASED  # a restored backup after an erasure: key store wins
            out.append(
                EntryView(
                    entry.seq, entry.leaf_hash.hex(), header.to_dict(), state, data, state_seq
                )
            )
        return out

    def _open(
        self, entry: StoredEntry, payload: bytes, category: str, stored_key: StoredKey
    ) -> dict[str, Any]:
        key = self.keyring.unwrap(stored_key)  # ExternalKeyMissingError: caller says "erased"
        try:
            plain = key.open(payload, payload_aad(category, entry.event_id, key.key_id))
            data = strict_loads(plain)
        except (CryptoError, FormatError) as exc:
            raise CryptoError(f"payload of seq {entry.seq} cannot be opened: {exc}") from None
        if not isinstance(data, dict):
            raise CryptoError(f"payload of seq {entry.seq} is not an object")
        return data
