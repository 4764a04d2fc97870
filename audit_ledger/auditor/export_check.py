"""The offline check of a regulator export (``audit-ledger verify-export``): a data file and
its manifest against what the auditor trusts (verifier keys or a tlog-policy), with no network
and no database. The rules are :mod:`audit_ledger.core.export_format`'s; this module reads the
two files as streams (one line or row at a time, however large the export).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from audit_ledger.core import export_format as fmt
from audit_ledger.core.policy import TlogPolicy, VerifiedCheckpoint
from audit_ledger.errors import ConfigError

#: ``audit-ledger export records --out FILE`` writes the manifest beside it, named so.
MANIFEST_SUFFIX = ".manifest"
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class ExportReport:
    data_format: str
    records: int
    verified: VerifiedCheckpoint


def _open(path: Path, what: str) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            yield from handle
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file: {exc.strerror or exc}") from None


def _digest(path: Path) -> str:
    def chunks() -> Iterator[bytes]:
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk
        except OSError as exc:
            raise ConfigError(f"cannot read the data file: {exc.strerror or exc}") from None

    return fmt.sha256_hex(chunks())


def _jsonl_records(path: Path) -> Iterator[dict[str, object]]:
    for number, line in enumerate(_open(path, "data"), 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise fmt.ExportCheckError(f"data line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise fmt.ExportCheckError(f"data line {number} is not a JSON object")
        yield record


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            lead = fmt.csv_columns([])
            if reader.fieldnames is None or list(reader.fieldnames[: len(lead)]) != lead:
                raise fmt.ExportCheckError("the CSV's header row is not an export's")
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise fmt.ExportCheckError(f"CSV line {reader.line_num} has a wrong cell count")
                yield row
    except UnicodeDecodeError:
        raise fmt.ExportCheckError("the CSV is not UTF-8") from None
    except csv.Error:
        raise fmt.ExportCheckError("the CSV is malformed") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the data file: {exc.strerror or exc}") from None


def verify_export(data: Path, manifest: Path | None, policy: TlogPolicy) -> ExportReport:
    """Check an export; :class:`~audit_ledger.errors.CoreError` (tampering, a checkpoint the
    policy rejects) or :class:`ConfigError` (an unreadable file)."""
    manifest = manifest or data.with_name(data.name + MANIFEST_SUFFIX)
    lines = (line.rstrip(b"\n") for line in _open(manifest, "manifest"))
    first = next(lines, None)
    if first is None:
        raise fmt.ExportCheckError("the manifest is empty")
    head = fmt.parse_head(first)
    verified = policy.verify_checkpoint(head.note)  # the log's signature and witness quorum
    checkpoint = verified.checkpoint
    if checkpoint.size != head.tree_size:
        raise fmt.ExportCheckError("the manifest's tree size is not its checkpoint's")
    records = _csv_rows(data) if head.data_format == "csv" else _jsonl_records(data)
    count, last = 0, -1
    for line, record, number in fmt.pair_up(lines, records):
        proven = fmt.check_manifest_record(
            line, f"manifest line {number}", checkpoint.size, checkpoint.root_hash
        )
        if proven.seq <= last:
            raise fmt.ExportCheckError(f"seq {proven.seq} is out of order")
        if head.data_format == "csv":
            fmt.check_row(record, proven)
        else:
            fmt.check_record(record, proven)
        count, last = count + 1, proven.seq
    tail = next(lines, None)
    if tail is None:
        raise fmt.ExportCheckError("the manifest has no final line (records and data_sha256)")
    fmt.check_tail(tail, count, _digest(data))
    if next(lines, None) is not None:
        raise fmt.ExportCheckError("the manifest goes on after its final line")
    return ExportReport(head.data_format, count, verified)
