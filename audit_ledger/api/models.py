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

    event_id: str = Field(
        description="UUID; the idempotency key (normalised to lower case)",
        json_schema_extra={"format": "uuid"},
    )
    category: str = Field(examples=["financial_transactions"])
    event_type: str = Field(
        examples=["payment_completed"], pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
    )
    occurred_at: str = Field(
        description="RFC 3339 with offset",
        examples=["2026-11-28T10:55:17+07:00"],
        json_schema_extra={"format": "date-time"},
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


# --- bodies the routes read themselves, and the answers of the retention routes ------------


class ErasureIn(BaseModel):
    """Body of ``POST /v1/erasure-requests``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | int
    categories: list[str] | None = Field(
        default=None, description="erasable categories to erase; absent: every erasable one"
    )


class HoldIn(BaseModel):
    """Body of ``POST /v1/legal-holds``; the identifier member matches the scope."""

    model_config = ConfigDict(extra="forbid")

    scope: str = Field(description="subject | order | category | time_range")
    user_id: str | int | None = None
    order_id: str | int | None = None
    category: str | None = None
    since: str | None = None
    until: str | None = None
    reason: str | None = None


class HoldReleaseIn(BaseModel):
    """Optional body of ``POST /v1/legal-holds/{hold_id}/release``: why it is released (kept in
    the sealed record of the release, like a hold's reason)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = None


class ErasureOut(BaseModel):
    run_at: str
    dry_run: bool
    recorded_as_seq: int | None
    recorded_as_seqs: list[int]
    categories: dict[str, dict[str, Any]]
    kept_by_policy: list[str]
    request_id: str
    state: str = Field(
        description="done, or blocked: a legal hold keeps some data (blocked_by names the "
        "holds) and the erasure resumes when they are released"
    )
    blocked_by: list[str]


class ErasureRequestOut(BaseModel):
    request_id: str
    subject_ref: str = Field(description="the subject's blind index, never the user id")
    categories: list[str] | None
    requested_by: str
    requested_at: str
    state: str = Field(description="pending | blocked | done")
    blocked_by: list[str]
    last_op_seq: int | None = Field(description="seq of the latest erasure entry it caused")
    updated_at: str


class ErasureRequestsOut(BaseModel):
    erasure_requests: list[ErasureRequestOut]


class HoldOut(BaseModel):
    hold_id: str
    scope: str
    scope_value: str | None
    since: str | None
    until: str | None
    created_by: str
    created_seq: int
    released_seq: int | None


class HoldsOut(BaseModel):
    holds: list[HoldOut]


class ReleaseOut(BaseModel):
    hold_id: str
    released_seq: int


class HealthOut(BaseModel):
    status: str


class ReplicaReadyOut(BaseModel):
    status: str = Field(description="ok | unreachable (reads are served by the primary)")
    lag_entries: int | None = Field(
        description="entries committed on the primary that the replica has not replayed yet"
    )


class ReadyOut(BaseModel):
    status: str = Field(description="ready | not ready")
    checks: dict[str, str]
    read_replica: ReplicaReadyOut | None = Field(
        default=None,
        description="with AUDIT_LEDGER_READ_DATABASE_URL only; never makes the service unready",
    )


class FieldProblem(BaseModel):
    field: str = Field(description="the failing member or parameter, by name")
    problem: str


class Problem(BaseModel):
    """An RFC 9457 problem details object (``application/problem+json``)."""

    type: str = Field(examples=["urn:audit-ledger:problem:validation"])
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = Field(
        default=None, description="422 only: the failing fields"
    )
