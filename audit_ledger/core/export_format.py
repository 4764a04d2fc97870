"""Record exports for regulators (issue #14 item 2): the CSV and JSON Lines shapes, the
manifest that makes them checkable offline, and the offline check itself. Pure: no I/O.

An export is two files. The **data file** holds one record per line (JSON Lines: the API's
entry view, ``{"seq", "leaf_hash", "header", "payload_state", "data"?}``) or per row (CSV: the
columns :func:`csv_columns` names). The **manifest** is JSON Lines too, so both are written and
checked as streams:

1. ``{"format": "audit-ledger-export/v1", "data_format", "tree_size", "checkpoint"}``: the
   signed (and witness-cosigned) checkpoint note every record is proven against;
2. per record, in the data file's order: ``{"seq", "leaf", "proof"}``: the entry's leaf bytes
   (base64; DESIGN §3, the JCS header) and its RFC 9162 §2.1.3 inclusion proof (hex hashes);
3. ``{"records": n, "data_sha256": hex}``: the count and the SHA-256 of the data file's bytes.

What the check proves: each record's header is exactly the leaf at that seq of the log the
checkpoint signs (leaf hash, inclusion proof to the signed root, header members equal); the
records are ascending and complete with respect to the manifest; the data file is the one the
manifest was written with. What it cannot prove: plaintext ``data``, since the header commits
to the SHA-256 of the stored *ciphertext* (DESIGN §3 ``payload_sha256``), which a regulator
never sees. The plaintext is as good as the service that decrypted it.

CSV cells and formula injection (OWASP "CSV Injection"): a spreadsheet runs a cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula, so such a cell is
written with a leading ``'`` (shown as text by spreadsheets). This applies to every cell,
negative numbers included (``-5`` is written ``'-5``); the offline check applies the same rule
when it compares header cells, so a guarded cell still verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from audit_ledger.core.header import HEADER_MEMBERS, parse_leaf
from audit_ledger.core.merkle import HASH_SIZE, leaf_hash, root_from_inclusion_proof
from audit_ledger.errors import FormatError, ProofError

FORMAT = "audit-ledger-export/v1"
DATA_FORMATS = ("csv", "jsonl")
#: The columns every CSV export starts with, before ``header.<member>`` and ``data.<field>``.
LEAD_COLUMNS = ("seq", "leaf_hash", "payload_state", "payload_state_seq")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_MAX_PROOF = 64


def safe_cell(text: str) -> str:
    """``text`` for a spreadsheet cell: a leading ``'`` where it would start a formula."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def cell(value: Any) -> str:
    """One CSV cell: strings as they are, null empty, anything else as compact sorted JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return safe_cell(text if isinstance(text, str) else text.decode())


def csv_columns(data_fields: Iterable[str]) -> list[str]:
    """The header row: the lead columns, every header member, then the data fields sorted."""
    return [
        *LEAD_COLUMNS,
        *(f"header.{m}" for m in HEADER_MEMBERS),
        *(f"data.{name}" for name in sorted(data_fields)),
    ]


def csv_row(record: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    """One record (an entry view's dict) as the cells of ``columns``."""
    header = record["header"]
    data = record.get("data") or {}
    lead = {
        "seq": record["seq"],
        "leaf_hash": record["leaf_hash"],
        "payload_state": record["payload_state"],
        "payload_state_seq": record.get("payload_state_seq"),
    }
    out = []
    for column in columns:
        if column in lead:
            out.append(cell(lead[column]))
        elif column.startswith("header."):
            out.append(cell(header.get(column[len("header.") :])))
        else:
            out.append(cell(data.get(column[len("data.") :])))
    return out


def manifest_head(data_format: str, tree_size: int, note: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "data_format": data_format,
        "tree_size": tree_size,
        "checkpoint": note,
    }


def manifest_record(seq: int, leaf: bytes, proof: Sequence[bytes]) -> dict[str, Any]:
    return {
        "seq": seq,
        "leaf": base64.b64encode(leaf).decode("ascii"),
        "proof": [h.hex() for h in proof],
    }


def manifest_tail(records: int, data_sha256: str) -> dict[str, Any]:
    return {"records": records, "data_sha256": data_sha256}


# --- the offline check ----------------------------------------------------------------------


class ExportCheckError(FormatError):
    """The export does not check out; the message says where (seq or line), never a value."""


@dataclass(frozen=True, slots=True)
class ManifestHead:
    data_format: str
    tree_size: int
    note: str


def parse_head(line: bytes) -> ManifestHead:
    obj = _object(line, "the manifest's first line")
    if obj.get("format") != FORMAT or set(obj) != {
        "format",
        "data_format",
        "tree_size",
        "checkpoint",
    }:
        raise ExportCheckError(f"the manifest does not start with a {FORMAT} head")
    fmt, size, note = obj["data_format"], obj["tree_size"], obj["checkpoint"]
    if fmt not in DATA_FORMATS or not _count(size) or not isinstance(note, str):
        raise ExportCheckError("the manifest head is malformed")
    return ManifestHead(fmt, size, note)


def _object(line: bytes, where: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ExportCheckError(f"{where} is not JSON") from None
    if not isinstance(obj, dict):
        raise ExportCheckError(f"{where} is not a JSON object")
    return obj


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True)
class ProvenLeaf:
    seq: int
    leaf_hash: str
    header: dict[str, Any]


def check_manifest_record(line: bytes, where: str, tree_size: int, root: bytes) -> ProvenLeaf:
    """One manifest record: its leaf is entry ``seq`` of the checkpoint's tree."""
    obj = _object(line, where)
    seq, leaf_b64, proof = obj.get("seq"), obj.get("leaf"), obj.get("proof")
    if set(obj) != {"seq", "leaf", "proof"} or not _count(seq) or not isinstance(leaf_b64, str):
        raise ExportCheckError(f"{where} is not a {{seq, leaf, proof}} record")
    if not isinstance(proof, list) or len(proof) > _MAX_PROOF:
        raise ExportCheckError(f"{where}: the proof is not a list of hashes")
    try:
        leaf = base64.b64decode(leaf_b64, validate=True)
        hashes = [bytes.fromhex(h) for h in proof if isinstance(h, str)]
    except (binascii.Error, ValueError):
        raise ExportCheckError(f"{where}: the leaf or a proof hash is not encoded right") from None
    if len(hashes) != len(proof) or any(len(h) != HASH_SIZE for h in hashes):
        raise ExportCheckError(f"{where}: a proof hash is not 32 bytes")
    try:
        header = parse_leaf(leaf)
    except FormatError:
        raise ExportCheckError(f"{where}: the leaf is not a v1 header") from None
    if header.seq != seq or seq >= tree_size:
        raise ExportCheckError(f"{where}: the leaf is not entry {seq} of the checkpoint's tree")
    hashed = leaf_hash(leaf)
    try:
        proven_root = root_from_inclusion_proof(seq, tree_size, hashed, hashes)
    except ProofError:
        raise ExportCheckError(f"seq {seq}: the inclusion proof is malformed") from None
    if proven_root != root:
        raise ExportCheckError(f"seq {seq}: the inclusion proof does not lead to the root")
    return ProvenLeaf(seq, hashed.hex(), header.to_dict())


def check_record(record: Mapping[str, Any], proven: ProvenLeaf) -> None:
    """A JSON Lines record against its proven leaf."""
    if (
        record.get("seq") != proven.seq
        or record.get("leaf_hash") != proven.leaf_hash
        or record.get("header") != proven.header
    ):
        raise ExportCheckError(f"seq {proven.seq}: the record is not the logged entry")


def check_row(row: Mapping[str, str], proven: ProvenLeaf) -> None:
    """A CSV row against its proven leaf (cells compared as :func:`cell` writes them)."""
    expected = {"seq": cell(proven.seq), "leaf_hash": cell(proven.leaf_hash)}
    expected.update({f"header.{m}": cell(proven.header[m]) for m in HEADER_MEMBERS})
    if any(row.get(column) != text for column, text in expected.items()):
        raise ExportCheckError(f"seq {proven.seq}: the row is not the logged entry")


def check_tail(line: bytes, records: int, data_sha256: str) -> None:
    obj = _object(line, "the manifest's last line")
    if set(obj) != {"records", "data_sha256"}:
        raise ExportCheckError("the manifest does not end with its {records, data_sha256} line")
    if obj["records"] != records:
        raise ExportCheckError(
            f"the manifest lists {obj['records']} records, the data file has {records}"
        )
    if obj["data_sha256"] != data_sha256:
        raise ExportCheckError("the data file is not the one the manifest was written with")


def pair_up(
    manifest_lines: Iterator[bytes], records: Iterable[Any]
) -> Iterator[tuple[bytes, Any, int]]:
    """Each data record with its manifest line (numbered from 2); leftovers are errors."""
    number = 1
    for record in records:
        number += 1
        line = next(manifest_lines, None)
        if line is None:
            raise ExportCheckError(f"the manifest ends before data record {number - 1}")
        yield line, record, number


def sha256_hex(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
