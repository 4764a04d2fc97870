"""Log files that rotate at midnight UTC *and* when they reach a size (the QuickCart plan's
100 MB x 10), so one busy day cannot fill the disk with a single file.

A daily rotation names the file ``<name>.<YYYY-MM-DD>`` as before; a size rotation names it
``<name>.<YYYY-MM-DD>T<HH-MM-SS.ffffff>`` (UTC, never colliding with the daily name, so the
stdlib's "delete the target first" never removes a rotated file). Both shapes are "rotated" for
:func:`audit_ledger.observability.logging.cleanup_rotated`, which still deletes them by the
tier's retention age.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from audit_ledger.observability.lines import LineStream

#: Lines between two reads of the live file's size (what this process wrote is counted).
RECOUNT_EVERY = 1000
#: The day's check looks at the clock only: a record for its signature.
_NO_RECORD = logging.makeLogRecord({})


class SizeAndDayRotatingFileHandler(logging.handlers.TimedRotatingFileHandler, LineStream):
    """``TimedRotatingFileHandler(when="midnight", utc=True)`` that also rotates at ``max_bytes``
    and keeps at most ``keep`` rotated files (``None``: keep them all, retention decides)."""

    def __init__(self, filename: Path, *, max_bytes: int, keep: int | None) -> None:
        super().__init__(
            filename, when="midnight", utc=True, backupCount=0, encoding="utf-8", delay=True
        )
        self.max_bytes = max_bytes
        self.keep = keep
        #: Bytes in the live file, counted as lines are written (None: read it at next use).
        #: ``tell()`` on the text stream flushed it and cost a system call for every line.
        self._size: int | None = None
        self._lines = 0

    def shouldRollover(self, record: logging.LogRecord) -> int:  # noqa: N802 - stdlib name
        # The line about to be written (the formatter caches it: rendering it here is free).
        return int(self._rollover_due(len(self.format(record).encode("utf-8")) + 1, record))

    def before_line(self, size: int) -> None:
        """A finished line of ours (lines.py) is about to be written: rotate first when due."""
        if self._rollover_due(size, _NO_RECORD):
            self.doRollover()
        if self.stream is None:
            self.stream = self._open()

    def _rollover_due(self, incoming: int, record: logging.LogRecord) -> bool:
        if super().shouldRollover(record):  # the day's rotation (it looks at the clock only)
            return True
        if self.max_bytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        self._lines += 1
        if self._size is None or self._lines % RECOUNT_EVERY == 0:
            # From the file itself now and then: another process may append to the same file.
            self.stream.flush()
            self._size = os.fstat(self.stream.fileno()).st_size
        if self._size > 0 and self._size + incoming > self.max_bytes:
            return True
        self._size += incoming
        return False

    def doRollover(self) -> None:  # noqa: N802 - stdlib name
        self._size = None
        if int(time.time()) >= self.rolloverAt:
            super().doRollover()  # the daily rotation, named by the day it covers
        else:
            if self.stream is not None:
                self.stream.close()
                self.stream = None
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S.%f")
            target = f"{self.baseFilename}.{stamp}"
            live = Path(self.baseFilename)
            if live.exists():
                live.rename(target)
        self._prune()

    def _prune(self) -> None:
        if self.keep is None:
            return
        base = Path(self.baseFilename)
        rotated = sorted(
            (p for p in base.parent.glob(base.name + ".*") if p.is_file()),
            key=lambda p: (p.stat().st_mtime, p.name),
        )
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink(missing_ok=True)
