"""Request and response shapes for the OpenAPI document (DESIGN §4).

Bodies are parsed strictly by the ledger layer itself (no floats, no duplicate members, unknown
members refused), so these models document the contract; they are not a second validator.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventIn(BaseModel):
    """One compliance event, as the bot submits it."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(description="UUID; the idempotency key (normalised to lower case)")
    category: str = Field(examples=["financial_transactions"])
    event_type: str = Field(examples=["payment_completed"])
    occurred_at: str = Field(
        description="RFC 3339 with offset", examples=["2026-11-28T10:55:17+07:00"]
    )
    correlation_id: str | None = None
    data: dict[str, Any] = Field(
        description="category fields; money as integer IDR or decimal string"
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn]


class SearchIn(BaseModel):
    """Filters of ``POST /v1/events/search``; identifiers are matched through the blind index."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = None
    event_type: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int | None = Field(default=None, ge=1, le=1000)
    cursor: str | None = None
    user_id: str | int | None = None
    order_id: str | int | None = None


class ReceiptOut(BaseModel):
    seq: int
    event_id: str
    leaf_hash: str
    recorded_at: str


class ReceiptsOut(BaseModel):
    receipts: list[ReceiptOut]


class EntryOut(BaseModel):
    seq: int
    leaf_hash: str
    header: dict[str, Any]
    payload_state: str = Field(description="present | withheld | purged | erased")
    payload_state_seq: int | None = Field(
        default=None, description="seq of the ledger_operations entry that purged/erased it"
    )
    data: dict[str, Any] | None = None


class PageOut(BaseModel):
    events: list[EntryOut]
    next_cursor: str | None


class LeafOut(BaseModel):
    seq: int
    leaf: str = Field(description="base64 of the leaf bytes")


class LeavesOut(BaseModel):
    leaves: list[LeafOut]


class InclusionOut(BaseModel):
    seq: int
    tree_size: int
    hashes: list[str]


class ConsistencyOut(BaseModel):
    first: int
    second: int
    hashes: list[str]
