"""Verification of the small tables read whole: data keys, checkpoints, witness cosignatures and
principals — each value of its column's type, and each row well-formed (issue #12 item 3).

Entries are checked against the leaves they commit to (:mod:`.verify_entries`); these rows are
not all committed to by the log, so what can be checked is their form: a value of the wrong type
(SQLite stores any value in any column), a timestamp that is not canonical, a hash of the wrong
length, a cosignature line that does not say what its columns say. A well-formed change to a
column nothing commits to (a data key's use count, a principal's row until principals are bound
to the chain) is beyond what verification can see; the README says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from audit_ledger.core.checkpoint import split_note
from audit_ledger.core.timestamps import is_canonical_timestamp
from audit_ledger.errors import CheckpointError, ValidationError
from audit_ledger.ledger.identity import check_name
from audit_ledger.ledger.verify_entries import FoundProblemError, fail
from audit_ledger.roles import ROLES
from audit_ledger.storage.integrity import WHOLE_TABLES, wrong_type

#: Key scopes a data key row may name (DESIGN §2: per period, or per data subject).
KEY_SCOPES = frozenset({"period", "subject"})
TOKEN_HASH_SIZE = 32  # SHA-256
#: A C2SP cosignature/v1 blob: key ID (4) ‖ timestamp (8) ‖ Ed25519 signature (64).
COSIGNATURE_BLOB_SIZE = 4 + 8 + 64


class RowSource(Protocol):
    def whole_rows(self, name: str) -> Iterator[dict[str, Any]]: ...


def _where(table: str, row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """How a finding names its row: checkpoint size, data key id, or position (a principal's
    name is not echoed: a tampered one may hold anything)."""
    if table in {"checkpoints", "checkpoint_cosignatures"} and type(row["tree_size"]) is int:
        return {"checkpoint": row["tree_size"]}
    if table == "data_keys" and type(row["key_id"]) is str and row["key_id"].isprintable():
        return {"key_id": row["key_id"][:64]}
    return {}


def check_types(source: RowSource) -> None:
    """Every value of every whole-read table but ``data_keys`` (:func:`check_key_rows`) is of
    its column's type (before anything uses them: a value read as TEXT where bytes belong must
    be a finding, not a TypeError)."""
    for name in WHOLE_TABLES:
        if name != "data_keys":
            for index, row in enumerate(source.whole_rows(name)):
                _check_type(name, row, index)


def _check_type(name: str, row: dict[str, Any], index: int) -> None:
    bad = wrong_type(WHOLE_TABLES[name], row)
    if bad is not None:
        raise fail(
            f"stored {bad} (row {index}) holds a value of the wrong type",
            **_where(name, row, index),
        )


def _timestamp(value: Any) -> bool:
    return isinstance(value, str) and is_canonical_timestamp(value)


def check_key_rows(source: RowSource) -> None:
    """Each data key row holds values of its columns' types and is well-formed (one read of a
    table that has a row per data subject)."""
    for index, key in enumerate(source.whole_rows("data_keys")):
        _check_type("data_keys", key, index)
        where = _where("data_keys", key, index)
        if not (0 < len(key["key_id"]) <= 64 and key["key_id"].isprintable()):
            raise fail(f"data key row {index} has a malformed key_id")
        if key["scope_kind"] not in KEY_SCOPES or key["uses"] < 0 or not key["kek_id"]:
            raise fail("data key row is malformed (scope, uses or kek_id)", **where)
        if not _timestamp(key["created_at"]) or not (
            key["destroyed_at"] is None or _timestamp(key["destroyed_at"])
        ):
            raise fail("data key row has a timestamp that is not canonical", **where)
        destroyed = key["wrapped"] is None
        if destroyed != (key["destroyed_at"] is not None) or destroyed != (
            key["destroyed_by_seq"] is not None
        ):
            raise fail("data key row: its destruction columns disagree", **where)


def check_forms(source: RowSource) -> None:
    """Each cosignature and principal row is well-formed (types checked before)."""
    sizes = {row["tree_size"] for row in source.whole_rows("checkpoints")}
    for index, cosig in enumerate(source.whole_rows("checkpoint_cosignatures")):
        _check_cosignature(cosig, sizes, index)
    for index, row in enumerate(source.whole_rows("principals")):
        _check_principal(row, index)


def _check_cosignature(row: Mapping[str, Any], sizes: set[int], index: int) -> None:
    where = _where("checkpoint_cosignatures", row, index)
    if row["tree_size"] not in sizes:
        raise fail(f"cosignature row {index} is of no stored checkpoint", **where)
    try:
        _, signatures = split_note("x\n\n" + row["line"])
    except CheckpointError:
        raise fail(f"cosignature row {index}: the line is not a signature line", **where) from None
    blob = signatures[0].blob if len(signatures) == 1 else b""
    if not (
        len(blob) == COSIGNATURE_BLOB_SIZE
        and signatures[0].name == row["witness"]
        and blob[:4].hex() == row["key_hash"]
        and int.from_bytes(blob[4:12], "big") == row["timestamp"]
    ):
        raise fail(f"cosignature row {index}: the line differs from its columns", **where)
    if not _timestamp(row["received_at"]):
        raise fail(f"cosignature row {index}: received_at is not canonical", **where)


def _check_principal(row: Mapping[str, Any], index: int) -> None:
    reason = None
    try:
        check_name(row["name"])
    except ValidationError:
        reason = "name"
    roles = row["roles"].split(",")
    if reason is None and len(row["token_hash"]) != TOKEN_HASH_SIZE:
        reason = "token_hash"
    elif reason is None and (not roles or not set(roles) <= ROLES or len(set(roles)) != len(roles)):
        reason = "roles"
    elif reason is None and not (
        _timestamp(row["created_at"])
        and (row["revoked_at"] is None or _timestamp(row["revoked_at"]))
        and (row["revoked_at"] is None or row["revoked_at"] >= row["created_at"])
    ):
        reason = "created_at or revoked_at"
    if reason is not None:
        raise fail(f"principal row {index} (in name order) has a malformed {reason}")


__all__ = ["FoundProblemError", "check_forms", "check_key_rows", "check_types"]
