"""The export formats' pure rules (issue #14 item 2): CSV cells guard against formula
injection, rows follow the columns, and the manifest checks refuse what does not prove out."""

from __future__ import annotations

import base64

import orjson
import pytest

from audit_ledger.core import export_format as fmt
from audit_ledger.core.header import LeafHeader
from audit_ledger.core.merkle import leaf_hash, reference_root


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain = text", "plain = text"),
        (-5, "'-5"),  # a negative number would be a formula too
        (42, "42"),
        (None, ""),
        (True, "true"),
        ({"b": 1, "a": ["-x"]}, '{"a":["-x"],"b":1}'),  # nested: sorted compact JSON
    ],
)
def test_cells_never_start_a_formula(value: object, written: str) -> None:
    assert fmt.cell(value) == written


def test_rows_follow_the_columns() -> None:
    columns = fmt.csv_columns({"note", "amount"})
    assert columns[:4] == list(fmt.LEAD_COLUMNS)
    assert columns[-2:] == ["data.amount", "data.note"]
    record = {
        "seq": 3,
        "leaf_hash": "ab",
        "header": {"category": "c", "refs": {"user": "x"}},
        "payload_state": "withheld",
    }
    row = dict(zip(columns, fmt.csv_row(record, columns), strict=True))
    assert row["seq"] == "3"
    assert row["header.refs"] == '{"user":"x"}'
    assert row["data.note"] == ""
    assert row["payload_state_seq"] == ""


def _leaves(n: int) -> list[bytes]:
    return [
        LeafHeader(
            seq=i,
            event_id=f"00000000-0000-4000-8000-{i:012d}",
            category="security_events",
            event_type="login_failed",
            occurred_at="2026-11-28T03:55:17.123456Z",
            recorded_at="2026-11-28T03:55:18.000000Z",
            writer="bot",
            correlation_id=None,
        ).encode()
        for i in range(n)
    ]


def test_a_manifest_record_proves_its_leaf_and_nothing_else() -> None:
    leaves = _leaves(3)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    root = reference_root(hashes)
    # The proof of leaf 2 in a tree of 3: the hash of the subtree [0, 2).
    proof = [reference_root(hashes[:2])]
    line = orjson.dumps(fmt.manifest_record(2, leaves[2], proof))
    proven = fmt.check_manifest_record(line, "line 3", 3, root)
    assert proven.seq == 2
    assert proven.leaf_hash == hashes[2].hex()
    with pytest.raises(fmt.ExportCheckError, match="root"):
        fmt.check_manifest_record(line, "line 3", 3, bytes(32))
    other = orjson.dumps(fmt.manifest_record(2, leaves[1], proof))
    with pytest.raises(fmt.ExportCheckError, match="not entry 2"):
        fmt.check_manifest_record(other, "line 3", 3, root)
    bad = orjson.dumps({"seq": 2, "leaf": base64.b64encode(b"{}").decode(), "proof": []})
    with pytest.raises(fmt.ExportCheckError, match="not a v1 header"):
        fmt.check_manifest_record(bad, "line 3", 3, root)
    with pytest.raises(fmt.ExportCheckError):
        fmt.check_manifest_record(b"[1]", "line 3", 3, root)


def test_the_head_and_tail_are_strict() -> None:
    head = orjson.dumps(fmt.manifest_head("csv", 3, "note"))
    assert fmt.parse_head(head) == fmt.ManifestHead("csv", 3, "note")
    with pytest.raises(fmt.ExportCheckError):
        fmt.parse_head(orjson.dumps({**fmt.manifest_head("xlsx", 3, "n")}))
    tail = orjson.dumps(fmt.manifest_tail(2, "ab"))
    fmt.check_tail(tail, 2, "ab")
    with pytest.raises(fmt.ExportCheckError, match="lists 2 records"):
        fmt.check_tail(tail, 1, "ab")
    with pytest.raises(fmt.ExportCheckError, match="not the one"):
        fmt.check_tail(tail, 2, "cd")
