"""Operational log files rotate by size as well as by day (issue #15 item 2): a size rotation
never overwrites a rotated file, names it as ``cleanup_rotated`` expects, the count cap applies
only to the capped tiers, and every line carries ``service`` and ``environment``."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit_ledger.observability.loggers import get_logger
from audit_ledger.observability.logging import cleanup_rotated
from audit_ledger.observability.rotation import SizeAndDayRotatingFileHandler
from tests.support.logs import configured_logging


@pytest.fixture
def small_logs(tmp_path: Path) -> Iterator[Path]:
    options = {"environment": "qa", "max_bytes": 2048, "backup_count": 3}
    with configured_logging(tmp_path / "logs", **options) as log_dir:
        yield log_dir


def _lines(directory: Path, stem: str) -> list[dict[str, object]]:
    out = []
    for path in sorted(directory.glob(stem + "*")):
        out.extend(json.loads(line) for line in path.read_text("utf-8").splitlines())
    return out


def test_files_rotate_at_the_size_and_lose_no_line(small_logs: Path) -> None:
    for n in range(100):
        get_logger("security").warning("probe", n=n)
    files = sorted(small_logs.glob("security.log*"))
    assert len(files) > 5  # ~150 bytes a line, 2 KiB a file: security is never count-capped
    assert all(p.stat().st_size <= 2048 for p in files)
    lines = _lines(small_logs, "security.log")
    assert sorted(int(str(line["n"])) for line in lines) == list(range(100))
    assert {(line["service"], line["environment"]) for line in lines} == {("audit-ledger", "qa")}
    rotated = [p for p in files if p.name != "security.log"]
    assert all(".log." in p.name for p in rotated)
    for path in rotated:  # cleanup_rotated recognises them (and ages them out by tier)
        old = time.time() - 91 * 86_400
        os.utime(path, (old, old))
    assert sorted(cleanup_rotated(small_logs)) == sorted(rotated)


def test_the_count_cap_keeps_the_newest_rotated_files(small_logs: Path) -> None:
    for n in range(200):
        get_logger("performance").info("http_request", n=n)
    rotated = sorted(p for p in small_logs.glob("performance.log.*"))
    assert len(rotated) == 3
    kept = sorted(int(str(line["n"])) for line in _lines(small_logs, "performance.log"))
    # The oldest lines went with the pruned files; the newest are all there, in one run.
    assert kept[-1] == 199
    assert kept == list(range(kept[0], 200))


def test_a_daily_rotation_still_happens(tmp_path: Path) -> None:
    handler = SizeAndDayRotatingFileHandler(tmp_path / "application.log", max_bytes=1 << 20, keep=2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "day one", None, None))
        handler.rolloverAt = int(time.time()) - 1  # midnight has passed
        handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "day two", None, None))
    finally:
        handler.close()
    rotated = [p for p in tmp_path.iterdir() if p.name != "application.log"]
    assert len(rotated) == 1
    assert "T" not in rotated[0].name.rsplit(".", 1)[-1]  # the daily name: <file>.<YYYY-MM-DD>
    assert rotated[0].read_text() == "day one\n"
    assert (tmp_path / "application.log").read_text() == "day two\n"


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)


def test_a_file_that_another_process_grew_is_rotated_once_its_size_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler counts what it writes and reads the file's size every RECOUNT_EVERY lines:
    lines appended by another process to the same file are caught up with there."""
    monkeypatch.setattr("audit_ledger.observability.rotation.RECOUNT_EVERY", 3)
    path = tmp_path / "application.log"
    handler = SizeAndDayRotatingFileHandler(path, max_bytes=1000, keep=None)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.emit(_record("ours 1"))
        with path.open("a") as other:  # another writer, unseen by this handler's count
            other.write("x" * 990 + "\n")
        handler.emit(_record("ours 2"))  # counted from the first read: fits
        assert len(list(tmp_path.iterdir())) == 1
        handler.emit(_record("ours 3"))  # third line: the size is read again, and it rotates
    finally:
        handler.close()
    assert path.read_text() == "ours 3\n"
    (rotated,) = (p for p in tmp_path.iterdir() if p != path)
    assert rotated.read_text().splitlines() == ["ours 1", "x" * 990, "ours 2"]


def test_the_count_of_written_bytes_rotates_at_the_size(tmp_path: Path) -> None:
    path = tmp_path / "security.log"
    handler = SizeAndDayRotatingFileHandler(path, max_bytes=100, keep=None)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for n in range(10):
            handler.emit(_record(f"{n:019d}"))  # 20 bytes a line: five to a file
    finally:
        handler.close()
    files = sorted(tmp_path.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert [p.stat().st_size for p in files] == [100, 100]
