"""Exports for regulators (issue #14 item 2): the records a principal may read, as CSV or JSON
Lines, with a manifest of inclusion proofs against a signed, cosigned checkpoint so that the
file can be checked offline (formats and the check: :mod:`audit_ledger.core.export_format`).

One use case for the CLI (``audit-ledger export records``) and the console (its search's
download buttons). The records are read through :meth:`Reads.query` page by page, so what a
role may see is decided in the one place the API uses, every page is a recorded read (its exact
seqs) and a refused export is recorded as ``read_refused``. Records are streamed: a page at a
time to the output (CSV rows go through a temporary JSON Lines spill first, because the header
row must name every ``data.<field>`` column before the first row).

The export covers the records below the latest checkpoint's tree size (only those have an
inclusion proof against a signed root); records appended since belong to the next export, once
a checkpoint covers them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

from audit_ledger.core import export_format as fmt
from audit_ledger.core import merkle
from audit_ledger.core.header import header_from_dict
from audit_ledger.errors import NotFoundError, ValidationError
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.log import Log
from audit_ledger.ledger.reads import EntryView, Query, Reads

DATA_FORMATS = fmt.DATA_FORMATS
#: Line terminator of the CSV (RFC 4180 §2: CRLF).
_CRLF = "\r\n"
#: Subtree hashes read per query (two bound parameters each; well under SQLite's limit).
_HASH_BATCH = 500


@dataclass(frozen=True, slots=True)
class ExportSummary:
    data_format: str
    records: int
    tree_size: int
    data_sha256: str


@dataclass(frozen=True, slots=True)
class _Record:
    view: EntryView
    leaf: bytes
    proof: list[bytes]


class _Hashing:
    """Writes through to ``out`` and hashes what it wrote (the manifest's ``data_sha256``)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.digest.update(data)


def _line(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) + b"\n"


class RecordExports:
    """Export the records a principal may read, provable offline."""

    def __init__(self, reads: Reads, log: Log) -> None:
        self.reads = reads
        self.log = log

    def write(  # noqa: PLR0917 - one call site per shell, all of it needed
        self,
        principal: Principal,
        q: Query,
        endpoint: str,
        data_format: str,
        data: IO[bytes],
        manifest: IO[bytes],
    ) -> ExportSummary:
        """Write the export of ``q``'s records to ``data`` and its manifest to ``manifest``.
        Raises before writing anything when the checkpoint is missing, the format unknown or
        the read refused (recorded)."""
        if data_format not in DATA_FORMATS:
            raise ValidationError(
                "the export format is csv or jsonl", [{"field": "format", "problem": "unknown"}]
            )
        checkpoint = self.log.latest_checkpoint()
        if checkpoint is None:
            raise NotFoundError("no checkpoint yet: an export needs one to prove its records")
        size = checkpoint.tree_size
        q = dataclasses.replace(q, limit=self.reads.page_limit_max, cursor=None, newest_first=False)
        first = self.reads.query(principal, q, endpoint, below=size)  # refusals raise here
        records = self._records(principal, q, endpoint, size, first.events, first.next_cursor)
        manifest.write(
            _line(fmt.manifest_head(data_format, size, self.log.cosigned_note(checkpoint)))
        )
        out = _Hashing(data)
        if data_format == "jsonl":
            count = 0
            for count, record in enumerate(records, 1):  # noqa: B007 - count is the total
                out.write(_line(record.view.to_dict()))
                manifest.write(_proof_line(record))
        else:
            count = _write_csv(records, out, manifest)
        digest = out.digest.hexdigest()
        manifest.write(_line(fmt.manifest_tail(count, digest)))
        return ExportSummary(data_format, count, size, digest)

    def _records(  # noqa: PLR0917
        self,
        principal: Principal,
        q: Query,
        endpoint: str,
        size: int,
        views: list[EntryView],
        cursor: str | None,
    ) -> Iterator[_Record]:
        while True:
            proofs = self._proofs([v.seq for v in views], size)
            for view in views:
                leaf = header_from_dict(view.header).encode()
                if merkle.leaf_hash(leaf).hex() != view.leaf_hash:
                    raise ValidationError(
                        f"seq {view.seq} does not re-encode to its leaf hash; run verify",
                        [{"field": "seq", "problem": "leaf mismatch"}],
                    )
                yield _Record(view, leaf, proofs[view.seq])
            if cursor is None:
                return
            page = self.reads.query(
                principal, dataclasses.replace(q, cursor=cursor), endpoint, below=size
            )
            views, cursor = page.events, page.next_cursor

    def _proofs(self, seqs: list[int], size: int) -> dict[int, list[bytes]]:
        """The inclusion proofs of a page's seqs, from one read of the stored subtree hashes
        they need (neighbouring proofs share most of them): one query per proof made an
        export of 20,000 records take a minute on SQLite."""
        wanted: set[tuple[int, int]] = set()

        def collect(indexes: Sequence[tuple[int, int]]) -> list[bytes]:
            wanted.update(indexes)
            return [bytes(merkle.HASH_SIZE)] * len(indexes)  # shapes only: values unused

        for seq in seqs:
            merkle.inclusion_proof(seq, size, collect)
        ordered = sorted(wanted)
        known: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(ordered), _HASH_BATCH):
            chunk = ordered[start : start + _HASH_BATCH]
            known.update(zip(chunk, self.log.store.read_hashes(chunk), strict=True))

        def lookup(indexes: Sequence[tuple[int, int]]) -> list[bytes]:
            return [known[i] for i in indexes]

        return {seq: merkle.inclusion_proof(seq, size, lookup) for seq in seqs}


def _proof_line(record: _Record) -> bytes:
    return _line(fmt.manifest_record(record.view.seq, record.leaf, record.proof))


def _write_csv(records: Iterator[_Record], out: _Hashing, manifest: IO[bytes]) -> int:
    """Spill the views to a temporary file while collecting the data fields, then write the
    header row and one row per view (memory: one row at a time)."""
    fields: set[str] = set()
    count = 0
    with tempfile.TemporaryFile() as spill:
        for record in records:
            view = record.view.to_dict()
            fields.update(view.get("data") or {})
            spill.write(_line(view))
            manifest.write(_proof_line(record))
            count += 1
        spill.seek(0)
        columns = fmt.csv_columns(fields)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=_CRLF)

        def emit(cells: list[str]) -> None:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(cells)
            out.write(buffer.getvalue().encode("utf-8"))

        emit(columns)
        for line in spill:
            emit(fmt.csv_row(orjson.loads(line), columns))
    return count
